// the JS handle on a reference-counted storage. release() drops this handle's reference;
// the memory lives on while another handle or a queued op still holds it.
#pragma once
#include <cstdlib>
#include <memory>

#include "common.h"

namespace vffn::napi {

class StorageWrap : public Napi::ObjectWrap<StorageWrap> {
 public:
  // the Storage class of this env (each worker thread that loads the addon has its own)
  static Napi::FunctionReference& constructor(Napi::Env env);
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object New(Napi::Env env, StoragePtr s);
  explicit StorageWrap(const Napi::CallbackInfo& info);
  StoragePtr storage;
  // the tensor's view, checked once against the storage when the Tensor is made (setView), so ops
  // read it without touching the JS object's fields; immutable once set
  bool viewed = false;
  int64_t offset = 0;
  View meta;
  // the handle of a lib/ Tensor object `o` (its `_h`), or null when `o` holds none
  static StorageWrap* of(const Napi::Value& o);
  ~StorageWrap() override;
  // counts the handles this thread has released or lost (dispose, garbage collection): while it
  // stands still, no handle a recorded step checked has died since
  static uint64_t& released();

 private:
  Napi::Value SetView(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Share(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value Alive(const Napi::CallbackInfo& info);
};

// host memory a wait fills on a worker and hands to JS on the JS thread (as an external
// ArrayBuffer): the worker never touches JS-owned memory, which may be gone with its thread.
struct HostBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  HostBuffer() = default;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  ~HostBuffer() { std::free(data); }
  // null when the memory cannot be had (the caller reports ERR_OOM)
  static std::shared_ptr<HostBuffer> make(size_t bytes);
};

// wraps the buffer's memory as an ArrayBuffer without copying; JS owns it from then on
Napi::ArrayBuffer adopt(Napi::Env env, std::shared_ptr<HostBuffer> buf);

// runs on the JS thread to build the promise's value from native data only
using Resolve = std::function<Napi::Value(Napi::Env)>;

// a promise settled once `dev`'s worker reaches this point of its stream. it rejects exactly when
// one of `reads` carries a failure (with that failure's op, code and message), when `work` (run on
// the worker first, e.g. a copy into a HostBuffer) throws, or when the device has failed for good.
// nothing here holds a JS value off the JS thread: a worker thread may end while this is pending.
Napi::Promise wait_promise(Napi::Env env, Device* dev, std::vector<StoragePtr> reads, std::function<void()> work,
                           Resolve resolve);

// a promise rejected at once with (code, message)
Napi::Promise rejected(Napi::Env env, const std::string& code, const std::string& message);

}  // namespace vffn::napi
