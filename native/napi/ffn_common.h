// argument checks shared by the FFN entry points (ops_ffn.cpp, ops_versatile.cpp): what memory
// safety needs; the TS layer has already validated with user-facing messages.
#pragma once
#include <initializer_list>
#include <string>

#include "common.h"

namespace vffn::napi {

// a contiguous tensor of exactly `shape`, of one of `dtypes` (bit mask of 1 << dtype), on `dev`
inline void check_arg(const TensorArg& t, const char* name, std::initializer_list<int64_t> shape, int dtypes,
                      Device* dev) {
  std::string n(name);
  if (t.device != dev) fail("ERR_DEVICE", n + ": expected a tensor on " + dev->name() + ", got " + t.device->name());
  if (!((1 << t.meta.dtype) & dtypes)) fail("ERR_DTYPE", n + ": unexpected dtype " + dtype_name(t.meta.dtype));
  bool ok = t.meta.ndim == int32_t(shape.size());
  int i = 0;
  for (int64_t s : shape) ok = ok && t.meta.shape[i++] == s;
  if (!ok) fail("ERR_SHAPE", n + ": unexpected shape");
  if (!t.meta.contiguous()) fail("ERR_ARGUMENT", n + ": expected a contiguous tensor");
}

constexpr int kF32 = 1 << F32, kFloat = (1 << F32) | (1 << BF16), kI32 = 1 << I32;

inline TensorArg field(const Napi::Object& o, const char* key) { return tensor_arg(o.Get(key), key); }
inline bool has(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return !v.IsNull() && !v.IsUndefined();
}

}  // namespace vffn::napi
