// the JS handle on a reference-counted storage. release() drops this handle's reference;
// the memory lives on while another handle or a queued op still holds it.
#pragma once
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

 private:
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Share(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value Alive(const Napi::CallbackInfo& info);
};

// a promise resolved (via resolve(env)) once `dev` reaches this point of its stream, or
// rejected with the first error the stream raised since the last wait. `work` runs on the
// worker just before (e.g. a copy into host memory); it may throw.
Napi::Promise wait_promise(Napi::Env env, Device* dev, std::function<void()> work,
                           std::function<Napi::Value(Napi::Env)> resolve);

}  // namespace vffn::napi
