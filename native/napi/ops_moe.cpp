// entry points of the mixture-of-experts FFN: checks, then the op on the tensors' device. arguments
// come as one object of named tensors and sizes (see lib/nn/moe.ts), saved values as a nested object.
#include "../core/ffn_args.h"
#include "../cpu/ffn.h"
#include "ffn_common.h"

namespace vffn::napi {

namespace {

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

Saved read_saved(const Napi::Object& s, const WidthArgs& d, Device* dev) {
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

WidthArgs read_weights(const Napi::Object& o) {
  WidthArgs w = read_width_args(o);
  // N separate experts: they tile the intermediate dimension exactly
  if (w.T < 1 || w.N < 1 || w.K < 1 || w.K > w.N || w.E < 1 || w.E * w.N != w.I) fail("ERR_ARGUMENT", "moe: sizes out of range");
  check_width_args(w);
  return w;
}

Napi::Value MoeForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    if (!info[0].IsObject()) fail("ERR_ARGUMENT", "moeForward: expected an argument object");
    Napi::Object o = info[0].As<Napi::Object>();
    const WidthArgs w = read_weights(o);
    Device* dev = w.dev();
    TensorArg y = field(o, "y"), experts = field(o, "expertsOut"), weights = field(o, "weights"),
              counts = field(o, "expertCounts"), aux = field(o, "aux");
    check_arg(y, "y", {w.T, w.D}, kF32, dev);
    check_routing(experts, weights, counts, w);
    check_arg(aux, "aux", {1}, kF32, dev);
    bool train = bool_arg(o.Get("train"), "train");
    Saved sv{};
    if (train) {
      if (!has(o, "saved")) fail("ERR_ARGUMENT", "saved: training needs the saved tensors");
      sv = read_saved(o.Get("saved").As<Napi::Object>(), w, dev);
    }
    float eps = float(num_arg(o.Get("eps"), "eps")), alpha = float(num_arg(o.Get("balanceWeight"), "balanceWeight"));
    Io io;
    io.out(y).out(experts).out(weights).out(counts).out(aux);
    if (train) sv.add(io, true);
    w.add(io);
    enqueue(dev, "moe_forward", io, [=] {
      MoeForwardArgs a{y.view(),      experts.view(),  weights.view(), counts.view(),  aux.view(),
                       w.x.view(),    w.norm_w.view(), w.proj_w.view(), w.out_w.view(), w.router_w.view(),
                       train ? sv.view() : MoeSaved{}, w.N, w.K, w.E, eps, alpha, train ? 1 : 0};
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
    const WidthArgs w = read_weights(o);
    Device* dev = w.dev();
    TensorArg dx = field(o, "dx"), dnw = field(o, "dNormW"), dpw = field(o, "dProjW"), dow = field(o, "dOutW"),
              drw = field(o, "dRouterW"), dy = field(o, "dy");
    check_width_grads(dx, dy, dnw, dpw, dow, drw, w);
    TensorArg experts = field(o, "expertsOut"), weights = field(o, "weights"), counts = field(o, "expertCounts");
    check_routing(experts, weights, counts, w);
    if (!has(o, "saved")) fail("ERR_ARGUMENT", "saved: backward needs the saved tensors");
    Saved sv = read_saved(o.Get("saved").As<Napi::Object>(), w, dev);
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
                        w.N,             w.K,              w.E,              eps,          alpha,
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
