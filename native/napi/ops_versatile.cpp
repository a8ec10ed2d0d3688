// entry points of VersatileFFN: checks, then the op on the tensors' device. arguments come as one
// object of named tensors and sizes (see lib/nn/versatile.ts), saved values as a nested object.
#include "../core/ffn_args.h"
#include "../cpu/ffn.h"
#include "ffn_common.h"

namespace vffn::napi {

namespace {

// the width path's arguments, and the loop head with L, the most loops
struct Args : WidthArgs {
  TensorArg depth_w;
  int64_t L;
  void add(Io& io) const {
    WidthArgs::add(io);
    io.in(depth_w);
  }
};

struct Saved {
  TensorArg order, depth_p, xs, rstd, h, assign, expert_start, width_h, width_o, x_width, router_p;
  int32_t recompute_dtype = F32;  // with recompute: the dtype the recomputed h and width_h are rounded to
  void add(Io& io, bool written) const {
    for (const TensorArg* t : {&order, &depth_p, &xs, &rstd, &h, &assign, &expert_start, &width_h, &width_o, &x_width, &router_p})
      written ? io.out(*t) : io.in(*t);
  }
  // h and width_h may be absent (recompute 'ffn'): views without data, of the dtype the forward
  // would have saved them in (bfloat16 under bf16-mixed), which the backward rounds them to
  VersatileSaved view() const {
    View none;
    none.dtype = recompute_dtype;
    return {order.view(),        depth_p.view(), xs.view(),      rstd.view(),    h.storage ? h.view() : none,
            assign.view(),       expert_start.view(), width_h.storage ? width_h.view() : none,
            width_o.view(),      x_width.view(),      router_p.view()};
  }
};

Saved read_saved(const Napi::Object& s, const Args& d, Device* dev) {
  // recompute 'ffn': no h or widthH (the backward computes them again; CPU only)
  const bool keep_h = has(s, "h"), keep_wh = has(s, "widthH");
  if (keep_h != keep_wh) fail("ERR_ARGUMENT", "saved: h and widthH are given together or not at all");
  if (!keep_h && dev->type != kCPU) fail("ERR_UNSUPPORTED", "recompute 'ffn' is implemented on cpu only");
  Saved v{field(s, "order"), field(s, "depthP"), field(s, "xs"), field(s, "rstd"), keep_h ? field(s, "h") : TensorArg{},
          field(s, "assign"), field(s, "expertStart"), keep_wh ? field(s, "widthH") : TensorArg{}, field(s, "widthO"),
          field(s, "xWidth"), field(s, "routerP")};
  check_arg(v.order, "order", {d.T}, kI32, dev);
  check_arg(v.depth_p, "depthP", {d.T, d.L}, kF32, dev);
  check_arg(v.xs, "xs", {d.L + 1, d.T, d.D}, kF32, dev);
  check_arg(v.rstd, "rstd", {d.L, d.T}, kF32, dev);
  if (keep_h) check_arg(v.h, "h", {d.L, d.T, 2 * d.I}, kFloat, dev);  // bfloat16 under bf16-mixed
  check_arg(v.assign, "assign", {d.T * d.K}, kI32, dev);
  check_arg(v.expert_start, "expertStart", {d.N + 1}, kI32, dev);
  if (keep_wh) check_arg(v.width_h, "widthH", {d.T * d.K, 2 * d.E}, kFloat, dev);  // bfloat16 under bf16-mixed
  check_arg(v.width_o, "widthO", {d.T * d.K, d.D}, kF32, dev);
  check_arg(v.x_width, "xWidth", {d.T, d.D}, kF32, dev);
  check_arg(v.router_p, "routerP", {d.T, d.N}, kF32, dev);
  // recomputeBf16: true when the module saves its pre-activations in bfloat16 (bf16-mixed)
  if (!keep_h && has(s, "recomputeBf16") && bool_arg(s.Get("recomputeBf16"), "saved.recomputeBf16")) v.recompute_dtype = BF16;
  return v;
}

Args read_weights(const Napi::Object& o) {
  Args w;
  static_cast<WidthArgs&>(w) = read_width_args(o);
  w.depth_w = field(o, "depthW");
  w.L = int_arg(o.Get("maxDepth"), "maxDepth");
  if (w.T < 1 || w.N < 1 || w.K < 1 || w.K > w.N || w.L < 1 || w.E < 1 || w.E * w.N > w.I)
    fail("ERR_ARGUMENT", "versatile: sizes out of range");
  check_width_args(w);
  check_arg(w.depth_w, "depth_predictor.weight", {w.L, w.D}, kFloat, w.dev());
  return w;
}

Napi::Value VersatileForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail("ERR_ARGUMENT", "versatileForward: expected an argument object");
    Napi::Object o = info[0].As<Napi::Object>();
    const Args w = read_weights(o);
    Device* dev = w.dev();
    TensorArg y = field(o, "y"), loops = field(o, "loops"), lambda = field(o, "lambda"), experts = field(o, "expertsOut"),
              weights = field(o, "weights"), counts = field(o, "expertCounts"), aux = field(o, "aux");
    check_arg(y, "y", {w.T, w.D}, kF32, dev);
    check_arg(loops, "loops", {w.T}, kI32, dev);
    check_arg(lambda, "lambda", {w.T}, kF32, dev);
    check_routing(experts, weights, counts, w);
    check_arg(aux, "aux", {1}, kF32, dev);
    bool train = bool_arg(o.Get("train"), "train");
    Saved sv{};
    if (train) {
      if (!has(o, "saved")) fail("ERR_ARGUMENT", "saved: training needs the saved tensors");
      sv = read_saved(o.Get("saved").As<Napi::Object>(), w, dev);
    }
    bool noise = bool_arg(o.Get("noise"), "noise");
    uint64_t seed = uint64_t(uint32_t(int_arg(o.Get("seedLo"), "seedLo"))) |
                    (uint64_t(uint32_t(int_arg(o.Get("seedHi"), "seedHi"))) << 32);
    float eps = float(num_arg(o.Get("eps"), "eps")), tau = float(num_arg(o.Get("tau"), "tau")),
          alpha = float(num_arg(o.Get("balanceWeight"), "balanceWeight"));
    Io io;
    io.out(y).out(loops).out(lambda).out(experts).out(weights).out(counts).out(aux);
    if (train) sv.add(io, true);
    w.add(io);
    enqueue(dev, "versatile_forward", io, [=] {
      VersatileForwardArgs a{y.view(),        loops.view(),    lambda.view(),   experts.view(),   weights.view(),
                             counts.view(),   aux.view(),      w.x.view(),      w.norm_w.view(),  w.proj_w.view(),
                             w.out_w.view(),  w.router_w.view(), w.depth_w.view(), train ? sv.view() : VersatileSaved{},
                             w.N, w.K, w.L, w.E, eps, tau, alpha, train ? 1 : 0, noise ? 1 : 0, seed};
      if (dev->type == kCPU) return cpu::versatile_forward(a);
      cuda_call(dev, "versatile_forward", &a);
    });
    return info.Env().Undefined();
  });
}

Napi::Value VersatileBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail("ERR_ARGUMENT", "versatileBackward: expected an argument object");
    Napi::Object o = info[0].As<Napi::Object>();
    const Args w = read_weights(o);
    Device* dev = w.dev();
    TensorArg dx = field(o, "dx"), dnw = field(o, "dNormW"), dpw = field(o, "dProjW"), dow = field(o, "dOutW"),
              drw = field(o, "dRouterW"), ddw = field(o, "dDepthW"), dy = field(o, "dy");
    check_width_grads(dx, dy, dnw, dpw, dow, drw, w);
    check_arg(ddw, "d depth_predictor.weight", {w.L, w.D}, kF32, dev);
    TensorArg loops = field(o, "loops"), lambda = field(o, "lambda"), experts = field(o, "expertsOut"),
              weights = field(o, "weights"), counts = field(o, "expertCounts");
    check_arg(loops, "loops", {w.T}, kI32, dev);
    check_arg(lambda, "lambda", {w.T}, kF32, dev);
    check_routing(experts, weights, counts, w);
    if (!has(o, "saved")) fail("ERR_ARGUMENT", "saved: backward needs the saved tensors");
    Saved sv = read_saved(o.Get("saved").As<Napi::Object>(), w, dev);
    float eps = float(num_arg(o.Get("eps"), "eps")), tau = float(num_arg(o.Get("tau"), "tau")),
          alpha = float(num_arg(o.Get("balanceWeight"), "balanceWeight")),
          aux_grad = float(num_arg(o.Get("auxGrad"), "auxGrad"));
    Io io;
    io.out(dx).inout(dnw).inout(dpw).inout(dow).inout(drw).inout(ddw).in(dy);
    io.in(loops).in(lambda).in(experts).in(weights).in(counts);
    sv.add(io, false);
    w.add(io);
    enqueue(dev, "versatile_backward", io, [=] {
      VersatileBackwardArgs a{dx.view(),       dnw.view(),      dpw.view(),        dow.view(),       drw.view(),
                              ddw.view(),      dy.view(),       w.x.view(),        w.norm_w.view(),  w.proj_w.view(),
                              w.out_w.view(),  w.router_w.view(), w.depth_w.view(), loops.view(),     lambda.view(),
                              experts.view(),  weights.view(),  counts.view(),     sv.view(),        w.N,
                              w.K,             w.L,             w.E,               eps,              tau,
                              alpha,           aux_grad};
      if (dev->type == kCPU) return cpu::versatile_backward(a);
      cuda_call(dev, "versatile_backward", &a);
    });
    return info.Env().Undefined();
  });
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("versatileForward", Napi::Function::New(env, VersatileForward));
  exports.Set("versatileBackward", Napi::Function::New(env, VersatileBackward));
}
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
