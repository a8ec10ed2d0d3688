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
  Handles handles;
  // ["_id"]: the key interned once (looking a name up costs more than the op); an array because
  // Node-API 8 keeps references to objects only
  Napi::ObjectReference key_id;
  // lib/'s VffnError (setErrorClass): native errors are made as instances of it
  Napi::FunctionReference error_class;
  std::shared_ptr<EnvLink> link;
  std::unordered_map<uint64_t, PendingWait> pending;
  uint64_t next_id = 1;
};

EnvData* env_data(napi_env env) {
  void* p = nullptr;
  napi_get_instance_data(env, &p);
  if (p) return static_cast<EnvData*>(p);
  auto* d = new EnvData();
  Napi::Env e(env);
  e.SetInstanceData<EnvData>(d);
  Napi::Array keys = Napi::Array::New(e, 1);
  keys.Set(uint32_t(0), Napi::String::New(e, "_id"));
  d->key_id = Napi::Persistent(keys.As<Napi::Object>());
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

// ---- the handle table ----

namespace {
constexpr uint64_t kIndexMask = (uint64_t(1) << Handles::kIndexBits) - 1;
constexpr uint32_t kGenLimit = uint32_t(1) << (53 - Handles::kIndexBits);  // ids stay exact doubles
}  // namespace

double Handles::add(StoragePtr s, const View* view, int64_t offset) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    if (slots_.size() > kIndexMask) fail("ERR_OOM", "too many live tensors (2^26); dispose some");
    index = uint32_t(slots_.size());
    slots_.emplace_back();
  }
  Handle& h = slots_[index];
  h.storage = std::move(s);
  h.viewed = view != nullptr;
  if (view) h.meta = *view, h.offset = offset;
  return double((uint64_t(h.gen) << kIndexBits) | index);
}

bool Handles::well_formed(double id) {
  if (!(id >= double(uint64_t(1) << kIndexBits) && id < 9007199254740992.0)) return false;
  return double(uint64_t(id)) == id;
}

Handle* Handles::find(double id) {
  if (!well_formed(id)) return nullptr;
  uint64_t u = uint64_t(id);
  uint64_t index = u & kIndexMask;
  if (index >= slots_.size()) return nullptr;
  Handle& h = slots_[index];
  return h.storage && h.gen == (u >> kIndexBits) ? &h : nullptr;
}

bool Handles::release(double id) {
  Handle* h = find(id);
  if (!h) return false;
  released()++;
  h->storage.reset();
  h->viewed = false;
  h->gen = h->gen + 1 < kGenLimit ? h->gen + 1 : 1;
  free_.push_back(uint32_t(uint64_t(id) & kIndexMask));
  return true;
}

uint64_t& Handles::released() {
  thread_local uint64_t n = 0;
  return n;
}

Handles& handles(napi_env env) { return env_data(env)->handles; }

bool handle_id(napi_env env, const Napi::Value& v, double* id) {
  if (napi_get_value_double(env, v, id) == napi_ok) return true;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_object) return false;
  napi_value key, idv;
  if (napi_get_element(env, env_data(env)->key_id.Value(), 0, &key) != napi_ok) return false;
  if (napi_get_property(env, v, key, &idv) != napi_ok) return false;
  return napi_get_value_double(env, idv, id) == napi_ok;
}

Napi::Function error_class(napi_env env) {
  EnvData* d = env_data(env);
  return d->error_class.IsEmpty() ? Napi::Function() : d->error_class.Value();
}

namespace {
// setErrorClass(VffnError): the class native errors are made as, (code, message) -> error
Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "setErrorClass: expected a class");
  env_data(info.Env())->error_class = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}
void Register(Napi::Env env, Napi::Object exports) { exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass)); }
VFFN_REGISTER(Register);
}  // namespace

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
