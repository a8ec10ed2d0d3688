#include "storage.h"

#include <atomic>
#include <memory>
#include <mutex>

namespace vffn::napi {

namespace {
using Job = std::function<void(Napi::Env)>;
void call_job(Napi::Env env, Napi::Function, std::nullptr_t*, Job* job);
using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, Job, call_job>;

// per-env state: the Storage class and the thread-safe function that settles promises
struct EnvData {
  Napi::FunctionReference storage_ctor;
  Tsfn tsfn;
  int pending = 0;  // waits in flight; touched on the JS thread only
};

EnvData* env_data(Napi::Env env) {
  EnvData* d = env.GetInstanceData<EnvData>();
  if (!d) {
    d = new EnvData();
    env.SetInstanceData<EnvData>(d);
  }
  return d;
}
}  // namespace

Napi::FunctionReference& StorageWrap::constructor(Napi::Env env) { return env_data(env)->storage_ctor; }

void StorageWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "Storage",
                                 {InstanceMethod("release", &StorageWrap::Release),
                                  InstanceMethod("share", &StorageWrap::Share),
                                  InstanceAccessor("bytes", &StorageWrap::Bytes, nullptr),
                                  InstanceAccessor("alive", &StorageWrap::Alive, nullptr)});
  constructor(env) = Napi::Persistent(f);
  exports.Set("Storage", f);
}

Napi::Object StorageWrap::New(Napi::Env env, StoragePtr s) {
  Napi::Object o = constructor(env).New({});
  Unwrap(o)->storage = std::move(s);
  return o;
}

StorageWrap::StorageWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StorageWrap>(info) {}

Napi::Value StorageWrap::Release(const Napi::CallbackInfo& info) {
  storage.reset();
  return info.Env().Undefined();
}
Napi::Value StorageWrap::Share(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!storage) fail("ERR_DISPOSED", "tensor has been disposed");
    return New(info.Env(), storage);
  });
}
Napi::Value StorageWrap::Bytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), storage ? double(storage->bytes) : 0);
}
Napi::Value StorageWrap::Alive(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), bool(storage));
}

// ---- promises settled from worker threads ----

namespace {
void call_job(Napi::Env env, Napi::Function, std::nullptr_t*, Job* job) {
  if (env != nullptr) {
    EnvData* d = env_data(env);
    if (--d->pending == 0) d->tsfn.Unref(env);
    (*job)(env);
  }
  delete job;
}

// referenced only while a wait is pending, so an idle addon never keeps the process alive
EnvData* settler(Napi::Env env) {
  EnvData* d = env_data(env);
  if (!d->tsfn) {
    d->tsfn = Tsfn::New(env, "vffn-settle", 0, 1);
    d->tsfn.Unref(env);
  }
  return d;
}
}  // namespace

Napi::Promise wait_promise(Napi::Env env, Device* dev, std::function<void()> work,
                           std::function<Napi::Value(Napi::Env)> resolve) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(Napi::Promise::Deferred::New(env));
  EnvData* s = settler(env);
  if (s->pending++ == 0) s->tsfn.Ref(env);
  Tsfn tsfn = s->tsfn;
  std::string why;
  if (dev->stream.fatal(&why)) {
    deferred->Reject(js_error(env, "ERR_DEVICE", dev->name() + " has failed: " + why).Value());
    if (--s->pending == 0) s->tsfn.Unref(env);
    return deferred->Promise();
  }
  dev->stream.enqueue("wait", [dev, deferred, tsfn, work = std::move(work), resolve = std::move(resolve)]() mutable {
    std::string code, message, op;
    StreamError err;
    if (dev->stream.take_error(&err)) {
      code = err.code;
      op = err.op;
      message = err.message;
    } else {
      try {
        if (work) work();
      } catch (const Error& e) {
        code = e.code, op = "read", message = e.message;
      } catch (const std::exception& e) {
        code = "ERR_INTERNAL", op = "read", message = e.what();
      }
    }
    Job* job = new Job([deferred, code, op, message, resolve = std::move(resolve)](Napi::Env env) {
      Napi::HandleScope scope(env);
      if (!code.empty()) {
        deferred->Reject(js_error(env, code, "op '" + op + "' failed: " + message).Value());
        return;
      }
      try {
        deferred->Resolve(resolve ? resolve(env) : env.Undefined());
      } catch (const Napi::Error& e) {
        deferred->Reject(e.Value());
      }
    });
    if (tsfn.BlockingCall(job) != napi_ok) delete job;  // env is gone: nobody to tell
  });
  return deferred->Promise();
}

}  // namespace vffn::napi
