#include "storage.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace vffn::napi {

namespace {

// a finished wait, handed from a worker to the JS thread: native data only
struct Settled {
  uint64_t id;
  FailurePtr failure;
};

// the path from workers back to one JS environment. `alive` turns false in the environment's
// cleanup hook, under the lock, so no worker posts to a thread-safe function that is being torn down.
struct EnvLink {
  std::mutex mu;
  bool alive = true;
  napi_threadsafe_function tsfn = nullptr;
  bool post(Settled* s) {
    std::lock_guard<std::mutex> lk(mu);
    return alive && napi_call_threadsafe_function(tsfn, s, napi_tsfn_nonblocking) == napi_ok;
  }
};

struct PendingWait {
  napi_deferred deferred;
  Resolve resolve;
};

// per-env state, touched on that env's JS thread only (but `link`, which workers share)
struct EnvData {
  Napi::FunctionReference storage_ctor;
  // ["_h"]: the key interned once (looking a name up costs more than the op); an array because
  // Node-API 8 keeps references to objects only
  Napi::ObjectReference key_h;
  std::shared_ptr<EnvLink> link;
  std::unordered_map<uint64_t, PendingWait> pending;
  uint64_t next_id = 1;
};

EnvData* env_data(Napi::Env env) {
  EnvData* d = env.GetInstanceData<EnvData>();
  if (!d) {
    d = new EnvData();
    env.SetInstanceData<EnvData>(d);
  }
  return d;
}

void settle(napi_env env, napi_value, void* context, void* data) {
  std::unique_ptr<Settled> s(static_cast<Settled*>(data));
  if (env == nullptr) return;  // the environment is going away: nobody to tell
  EnvData* d = static_cast<EnvData*>(context);
  auto it = d->pending.find(s->id);
  if (it == d->pending.end()) return;
  PendingWait w = std::move(it->second);
  d->pending.erase(it);
  if (d->pending.empty()) napi_unref_threadsafe_function(env, d->link->tsfn);
  Napi::Env e(env);
  Napi::HandleScope scope(e);
  if (s->failure) {
    const Failure& f = *s->failure;
    napi_reject_deferred(env, w.deferred, js_error(e, f.code, "op '" + f.op + "' failed: " + f.message).Value());
    return;
  }
  try {
    Napi::Value v = w.resolve ? w.resolve(e) : e.Undefined();
    napi_resolve_deferred(env, w.deferred, v);
  } catch (const Napi::Error& err) {
    napi_reject_deferred(env, w.deferred, err.Value());
  } catch (const Error& err) {
    napi_reject_deferred(env, w.deferred, js_error(e, err.code, err.message).Value());
  } catch (const std::bad_alloc&) {
    napi_reject_deferred(env, w.deferred, js_error(e, "ERR_OOM", "out of memory").Value());
  }
}

void on_env_cleanup(void* arg) {
  auto* link = static_cast<std::shared_ptr<EnvLink>*>(arg);
  {
    std::lock_guard<std::mutex> lk((*link)->mu);
    (*link)->alive = false;
  }
  delete link;
}

// created on the first wait; referenced only while a wait is pending, so an idle addon never
// keeps the process alive
EnvLink* link_of(Napi::Env env, EnvData* d) {
  if (d->link) return d->link.get();
  auto link = std::make_shared<EnvLink>();
  napi_value name;
  NAPI_THROW_IF_FAILED(env, napi_create_string_utf8(env, "vffn-settle", NAPI_AUTO_LENGTH, &name), nullptr);
  NAPI_THROW_IF_FAILED(env, napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, d, settle,
                                                            &link->tsfn),
                       nullptr);
  napi_unref_threadsafe_function(env, link->tsfn);
  // registered after the thread-safe function, so it runs before that function is torn down
  NAPI_THROW_IF_FAILED(env, napi_add_env_cleanup_hook(env, on_env_cleanup, new std::shared_ptr<EnvLink>(link)), nullptr);
  d->link = link;
  return link.get();
}
}  // namespace

Napi::FunctionReference& StorageWrap::constructor(Napi::Env env) { return env_data(env)->storage_ctor; }

void StorageWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "Storage",
                                 {InstanceMethod("release", &StorageWrap::Release),
                                  InstanceMethod("share", &StorageWrap::Share),
                                  InstanceMethod("setView", &StorageWrap::SetView),
                                  InstanceAccessor("bytes", &StorageWrap::Bytes, nullptr),
                                  InstanceAccessor("alive", &StorageWrap::Alive, nullptr)});
  constructor(env) = Napi::Persistent(f);
  Napi::Array keys = Napi::Array::New(env, 1);
  keys.Set(uint32_t(0), Napi::String::New(env, "_h"));
  env_data(env)->key_h = Napi::Persistent(keys.As<Napi::Object>());
  exports.Set("Storage", f);
}

namespace {
// marks objects made by this addon's Storage class (cheaper than instanceof, and per process)
const napi_type_tag kStorageTag = {0x7666666e5f737467ULL, 0x2d73746f72616765ULL};
}  // namespace

StorageWrap* StorageWrap::of(const Napi::Value& v) {
  if (!v.IsObject()) return nullptr;
  napi_env env = v.Env();
  napi_value key, h;
  if (napi_get_element(env, env_data(v.Env())->key_h.Value(), 0, &key) != napi_ok) return nullptr;
  if (napi_get_property(env, v, key, &h) != napi_ok) return nullptr;
  bool tagged = false;
  napi_valuetype t;
  if (napi_typeof(env, h, &t) != napi_ok || t != napi_object) return nullptr;
  if (napi_check_object_type_tag(env, h, &kStorageTag, &tagged) != napi_ok || !tagged) return nullptr;
  return Unwrap(Napi::Object(env, h));
}

// setView(dtype, offset, shape, strides): once, when a Tensor takes this handle
Napi::Value StorageWrap::SetView(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (viewed) fail("ERR_ARGUMENT", "tensor: this handle already has a view");
    if (!storage) fail("ERR_DISPOSED", "tensor has been disposed");
    TensorArg t;
    t.storage = storage;
    t.device = storage->device;
    t.name = "tensor";
    read_view(t, info[0], info[1], info[2], info[3], "tensor");  // every check of the slow path, once
    meta = t.meta;
    offset = t.offset;
    viewed = true;
    return info.Env().Undefined();
  });
}

Napi::Object StorageWrap::New(Napi::Env env, StoragePtr s) {
  Napi::Object o = constructor(env).New({});
  Unwrap(o)->storage = std::move(s);
  return o;
}

StorageWrap::StorageWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StorageWrap>(info) {
  napi_type_tag_object(info.Env(), info.This(), &kStorageTag);
}

Napi::Value StorageWrap::Release(const Napi::CallbackInfo& info) {
  if (storage) released()++;
  storage.reset();
  return info.Env().Undefined();
}

StorageWrap::~StorageWrap() { released()++; }

uint64_t& StorageWrap::released() {
  thread_local uint64_t n = 0;
  return n;
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

std::shared_ptr<HostBuffer> HostBuffer::make(size_t bytes) {
  auto b = std::make_shared<HostBuffer>();
  b->data = std::malloc(bytes ? bytes : 1);
  if (!b->data) return nullptr;
  b->bytes = bytes;
  return b;
}

Napi::ArrayBuffer adopt(Napi::Env env, std::shared_ptr<HostBuffer> buf) {
  if (buf->bytes == 0) return Napi::ArrayBuffer::New(env, 0);
  auto* keep = new std::shared_ptr<HostBuffer>(buf);
  napi_value ab;
  napi_status st = napi_create_external_arraybuffer(
      env, buf->data, buf->bytes, [](napi_env, void*, void* hint) { delete static_cast<std::shared_ptr<HostBuffer>*>(hint); },
      keep, &ab);
  if (st != napi_ok) {
    delete keep;
    NAPI_THROW_IF_FAILED(env, st, Napi::ArrayBuffer());
  }
  return Napi::ArrayBuffer(env, ab);
}

Napi::Promise rejected(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(js_error(env, code, message).Value());
  return d.Promise();
}

Napi::Promise wait_promise(Napi::Env env, Device* dev, std::vector<StoragePtr> reads, std::function<void()> work,
                           Resolve resolve) {
  not_recording("a wait (data(), sync(), a failure check)");
  std::string why;
  if (dev->stream.fatal(&why)) return rejected(env, "ERR_DEVICE", dev->name() + " has failed: " + why);
  EnvData* d = env_data(env);
  EnvLink* link = link_of(env, d);
  napi_deferred deferred;
  napi_value promise;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &promise), Napi::Promise());
  uint64_t id = d->next_id++;
  if (d->pending.empty()) napi_ref_threadsafe_function(env, link->tsfn);
  d->pending.emplace(id, PendingWait{deferred, std::move(resolve)});
  std::shared_ptr<EnvLink> shared = d->link;
  dev->stream.enqueue("wait", [dev, id, shared, reads = std::move(reads), work = std::move(work)] {
    auto s = std::make_unique<Settled>();
    s->id = id;
    s->failure = first_failure(reads);
    std::string fatal;
    if (!s->failure && dev->stream.fatal(&fatal))
      s->failure = std::make_shared<Failure>(Failure{"wait", "ERR_DEVICE", dev->name() + " has failed: " + fatal});
    if (!s->failure && work) {
      try {
        work();
      } catch (const Error& e) {
        s->failure = std::make_shared<Failure>(Failure{"read", e.code, e.message});
      } catch (const std::bad_alloc&) {
        s->failure = std::make_shared<Failure>(Failure{"read", "ERR_OOM", "out of memory"});
      } catch (const std::exception& e) {
        s->failure = std::make_shared<Failure>(Failure{"read", "ERR_INTERNAL", e.what()});
      }
    }
    if (shared->post(s.get())) s.release();
  });
  return Napi::Promise(env, promise);
}

}  // namespace vffn::napi
