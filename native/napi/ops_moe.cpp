// entry points of the mixture-of-experts FFN: checks, then the op on the tensors' device. arguments
// come as one object of named tensors and sizes (see lib/nn/moe.ts), saved values as a nested object.
#include "../core/ffn_args.h"
#include "../cpu/ffn.h"
#include "ffn_common.h"

namespace vffn::napi {

namespace {

struct Dims {
  int64_t T, D, I, N, K, E;
};

struct Saved {
  TensorArg rstd, assign, expert_start, width_h, width_o, router_p;
  void add(Io& io, bool written) const {
    for (const TensorArg* t : {&rstd, &assign, &expert_start, &width_h, &width_o, &router_p})
      written ? io.out(*t) : io.in(*t);
  }
  // width_h may be absent (recompute 'ffn'): a view without data, and the backward computes it again
  MoeSaved view() const {
    return {rstd.view(), assign.view(), expert_start.view(), width_h.storage ? width_h.view() : View{}, width_o.view(),
            router_p.view()};
  }
};

Saved read_saved(const Napi::Object& s, const Dims& d, Device* dev) {
  // recompute 'ffn': no widthH (CPU only)
  const bool keep_wh = has(s, "widthH");
  if (!keep_wh && dev->type != kCPU) fail("ERR_UNSUPPORTED", "recompute 'ffn' is implemented on cpu only");
  Saved v{field(s, "rstd"), field(s, "assign"), field(s, "expertStart"), keep_wh ? field(s, "widthH") : TensorArg{},
          field(s, "widthO"), field(s, "routerP")};
  check_arg(v.rstd, "rstd", {d.T}, kF32, dev);
  check_arg(v.assign, "assign", {d.T * d.K}, kI32, dev);
  check_arg(v.expert_start, "expertStart", {d.N + 1}, kI32, dev);
  if (keep_wh) check_arg(v.width_h, "widthH", {d.T * d.K, 2 * d.E}, kF32, dev);
  check_arg(v.width_o, "widthO", {d.T * d.K, d.D}, kF32, dev);
  check_arg(v.router_p, "routerP", {d.T, d.N}, kF32, dev);
  return v;
}

struct Weights {
  TensorArg x, norm_w, proj_w, out_w, router_w;
  void add(Io& io) const {
    for (const TensorArg* t : {&x, &norm_w, &proj_w, &out_w, &router_w}) io.in(*t);
  }
};

Weights read_weights(const Napi::Object& o, Dims& d) {
  Weights w{field(o, "x"), field(o, "normW"), field(o, "projW"), field(o, "outW"), field(o, "routerW")};
  d.N = int_arg(o.Get("experts"), "experts");
  d.K = int_arg(o.Get("topK"), "topK");
  d.E = int_arg(o.Get("expertHidden"), "expertHidden");
  d.T = w.x.meta.shape[0];
  d.D = w.x.meta.ndim == 2 ? w.x.meta.shape[1] : -1;
  d.I = w.out_w.meta.ndim == 2 ? w.out_w.meta.shape[1] : -1;
  // N separate experts: they tile the intermediate dimension exactly
  if (d.T < 1 || d.N < 1 || d.K < 1 || d.K > d.N || d.E < 1 || d.E * d.N != d.I)
    fail("ERR_ARGUMENT", "moe: sizes out of range");
  Device* dev = w.x.device;
  check_arg(w.x, "x", {d.T, d.D}, kF32, dev);
  check_arg(w.norm_w, "ff_norm.weight", {d.D}, kFloat, dev);
  check_arg(w.proj_w, "ff_proj.weight", {2 * d.I, d.D}, kFloat, dev);
  check_arg(w.out_w, "ff_out.weight", {d.D, d.I}, kFloat, dev);
  check_arg(w.router_w, "expert_gate.weight", {d.N, d.D}, kFloat, dev);
  return w;
}

Napi::Value MoeForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail("ERR_ARGUMENT", "moeForward: expected an argument object");
    Napi::Object o = info[0].As<Napi::Object>();
    Dims d{};
    Weights w = read_weights(o, d);
    Device* dev = w.x.device;
    TensorArg y = field(o, "y"), experts = field(o, "expertsOut"), weights = field(o, "weights"),
              counts = field(o, "expertCounts"), aux = field(o, "aux");
    check_arg(y, "y", {d.T, d.D}, kF32, dev);
    check_arg(experts, "expertsOut", {d.T, d.K}, kI32, dev);
    check_arg(weights, "weights", {d.T, d.K}, kF32, dev);
    check_arg(counts, "expertCounts", {d.N}, kI32, dev);
    check_arg(aux, "aux", {1}, kF32, dev);
    bool train = bool_arg(o.Get("train"), "train");
    Saved sv{};
    if (train) {
      if (!has(o, "saved")) fail("ERR_ARGUMENT", "saved: training needs the saved tensors");
      sv = read_saved(o.Get("saved").As<Napi::Object>(), d, dev);
    }
    float eps = float(num_arg(o.Get("eps"), "eps")), alpha = float(num_arg(o.Get("balanceWeight"), "balanceWeight"));
    Io io;
    io.out(y).out(experts).out(weights).out(counts).out(aux);
    if (train) sv.add(io, true);
    w.add(io);
    enqueue(dev, "moe_forward", io, [=] {
      MoeForwardArgs a{y.view(),      experts.view(),  weights.view(), counts.view(),  aux.view(),
                       w.x.view(),    w.norm_w.view(), w.proj_w.view(), w.out_w.view(), w.router_w.view(),
                       train ? sv.view() : MoeSaved{}, d.N, d.K, d.E, eps, alpha, train ? 1 : 0};
      if (dev->type == kCPU) return cpu::moe_forward(a);
      cuda_call(dev, "moe_forward", &a);
    });
    return info.Env().Undefined();
  });
}

Napi::Value MoeBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail("ERR_ARGUMENT", "moeBackward: expected an argument object");
    Napi::Object o = info[0].As<Napi::Object>();
    Dims d{};
    Weights w = read_weights(o, d);
    Device* dev = w.x.device;
    TensorArg dx = field(o, "dx"), dnw = field(o, "dNormW"), dpw = field(o, "dProjW"), dow = field(o, "dOutW"),
              drw = field(o, "dRouterW"), dy = field(o, "dy");
    check_arg(dx, "dx", {d.T, d.D}, kF32, dev);
    check_arg(dy, "dy", {d.T, d.D}, kF32, dev);
    check_arg(dnw, "d ff_norm.weight", {d.D}, kF32, dev);
    check_arg(dpw, "d ff_proj.weight", {2 * d.I, d.D}, kF32, dev);
    check_arg(dow, "d ff_out.weight", {d.D, d.I}, kF32, dev);
    check_arg(drw, "d expert_gate.weight", {d.N, d.D}, kF32, dev);
    TensorArg experts = field(o, "expertsOut"), weights = field(o, "weights"), counts = field(o, "expertCounts");
    check_arg(experts, "expertsOut", {d.T, d.K}, kI32, dev);
    check_arg(weights, "weights", {d.T, d.K}, kF32, dev);
    check_arg(counts, "expertCounts", {d.N}, kI32, dev);
    if (!has(o, "saved")) fail("ERR_ARGUMENT", "saved: backward needs the saved tensors");
    Saved sv = read_saved(o.Get("saved").As<Napi::Object>(), d, dev);
    float eps = float(num_arg(o.Get("eps"), "eps")), alpha = float(num_arg(o.Get("balanceWeight"), "balanceWeight")),
          aux_grad = float(num_arg(o.Get("auxGrad"), "auxGrad"));
    Io io;
    io.out(dx).inout(dnw).inout(dpw).inout(dow).inout(drw).in(dy);
    io.in(experts).in(weights).in(counts);
    sv.add(io, false);
    w.add(io);
    enqueue(dev, "moe_backward", io, [=] {
      MoeBackwardArgs a{dx.view(),       dnw.view(),       dpw.view(),       dow.view(),   drw.view(),
                        dy.view(),       w.x.view(),       w.norm_w.view(),  w.proj_w.view(), w.out_w.view(),
                        w.router_w.view(), experts.view(), weights.view(),   counts.view(), sv.view(),
                        d.N,             d.K,              d.E,              eps,          alpha,
                        aux_grad};
      if (dev->type == kCPU) return cpu::moe_backward(a);
      cuda_call(dev, "moe_backward", &a);
    });
    return info.Env().Undefined();
  });
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("moeForward", Napi::Function::New(env, MoeForward));
  exports.Set("moeBackward", Napi::Function::New(env, MoeBackward));
}
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
