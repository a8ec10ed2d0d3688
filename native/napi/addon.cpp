// module entry: every napi file registers its functions through VFFN_REGISTER.
#include "common.h"
#include "storage.h"

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  for (vffn::napi::RegisterFn fn : vffn::napi::registry()) fn(env, exports);
  return exports;
}

NODE_API_MODULE(versatile_ffn, InitAddon)
