// argument checks shared by the FFN entry points (ops_ffn.cpp, ops_versatile.cpp, ops_moe.cpp): what memory
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

// what the width path (VersatileFFN, MoEFFN) reads: x, the shared FFN's weights, the router, and
// the sizes: T tokens, D width, I intermediate, N experts, K chosen, E expert width
struct WidthArgs {
  TensorArg x, norm_w, proj_w, out_w, router_w;
  int64_t T, D, I, N, K, E;
  Device* dev() const { return x.device; }
  void add(Io& io) const {
    for (const TensorArg* t : {&x, &norm_w, &proj_w, &out_w, &router_w}) io.in(*t);
  }
};

// reads the width path's tensors and sizes; the caller checks the sizes, then check_width_args
inline WidthArgs read_width_args(const Napi::Object& o) {
  WidthArgs w{field(o, "x"), field(o, "normW"), field(o, "projW"), field(o, "outW"), field(o, "routerW"), 0, 0, 0, 0, 0, 0};
  w.N = int_arg(o.Get("experts"), "experts");
  w.K = int_arg(o.Get("topK"), "topK");
  w.E = int_arg(o.Get("expertHidden"), "expertHidden");
  w.T = w.x.meta.shape[0];
  w.D = w.x.meta.ndim == 2 ? w.x.meta.shape[1] : -1;
  w.I = w.out_w.meta.ndim == 2 ? w.out_w.meta.shape[1] : -1;
  return w;
}

inline void check_width_args(const WidthArgs& w) {
  Device* dev = w.dev();
  check_arg(w.x, "x", {w.T, w.D}, kF32, dev);
  check_arg(w.norm_w, "ff_norm.weight", {w.D}, kFloat, dev);
  check_arg(w.proj_w, "ff_proj.weight", {2 * w.I, w.D}, kFloat, dev);
  check_arg(w.out_w, "ff_out.weight", {w.D, w.I}, kFloat, dev);
  check_arg(w.router_w, "expert_gate.weight", {w.N, w.D}, kFloat, dev);
}

// the routing a forward writes and a backward reads: chosen experts, their weights, the counts
inline void check_routing(const TensorArg& experts, const TensorArg& weights, const TensorArg& counts, const WidthArgs& w) {
  check_arg(experts, "expertsOut", {w.T, w.K}, kI32, w.dev());
  check_arg(weights, "weights", {w.T, w.K}, kF32, w.dev());
  check_arg(counts, "expertCounts", {w.N}, kI32, w.dev());
}

// a backward's dx, dy and the gradients of the width path's weights
inline void check_width_grads(const TensorArg& dx, const TensorArg& dy, const TensorArg& dnw, const TensorArg& dpw,
                              const TensorArg& dow, const TensorArg& drw, const WidthArgs& w) {
  Device* dev = w.dev();
  check_arg(dx, "dx", {w.T, w.D}, kF32, dev);
  check_arg(dy, "dy", {w.T, w.D}, kF32, dev);
  check_arg(dnw, "d ff_norm.weight", {w.D}, kF32, dev);
  check_arg(dpw, "d ff_proj.weight", {2 * w.I, w.D}, kF32, dev);
  check_arg(dow, "d ff_out.weight", {w.D, w.I}, kF32, dev);
  check_arg(drw, "d expert_gate.weight", {w.N, w.D}, kF32, dev);
}

}  // namespace vffn::napi
