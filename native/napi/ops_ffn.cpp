// entry points of RMSNorm and the dense FFN: checks, then the op on the tensors' device.
#include "../core/ffn_args.h"
#include "../cpu/ffn.h"
#include "ffn_common.h"

namespace vffn::napi {

namespace {

// rmsnormForward(out, rstd | null, x, weight, eps)
Napi::Value RmsNormForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg out = tensor_arg(info[0], "out"), x = tensor_arg(info[2], "x"), w = tensor_arg(info[3], "weight");
    bool keep = !info[1].IsNull() && !info[1].IsUndefined();
    TensorArg rstd = keep ? tensor_arg(info[1], "rstd") : TensorArg{};
    float eps = float(num_arg(info[4], "eps"));
    Device* dev = x.device;
    int64_t T = x.meta.shape[0], D = x.meta.ndim == 2 ? x.meta.shape[1] : -1;
    check_arg(x, "x", {T, D}, kF32, dev);
    check_arg(out, "out", {T, D}, kF32, dev);
    check_arg(w, "weight", {D}, kFloat, dev);
    if (keep) check_arg(rstd, "rstd", {T}, kF32, dev);
    enqueue(dev, "rmsnorm_forward", Io().out(out).out(rstd).in(x).in(w), [=] {
      RmsNormArgs a{out.view(), keep ? rstd.view() : View{}, x.view(), w.view(), eps};
      if (dev->type == kCPU) return cpu::rmsnorm_forward(a);
      cuda_call(dev, "rmsnorm_forward", &a);
    });
    return info.Env().Undefined();
  });
}

// rmsnormBackward(dx, dweight, dout, x, weight, rstd)
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg dx = tensor_arg(info[0], "dx"), dw = tensor_arg(info[1], "dweight"), dout = tensor_arg(info[2], "dout"),
              x = tensor_arg(info[3], "x"), w = tensor_arg(info[4], "weight"), rstd = tensor_arg(info[5], "rstd");
    Device* dev = x.device;
    int64_t T = x.meta.shape[0], D = x.meta.ndim == 2 ? x.meta.shape[1] : -1;
    check_arg(x, "x", {T, D}, kF32, dev);
    check_arg(dx, "dx", {T, D}, kF32, dev);
    check_arg(dout, "dout", {T, D}, kF32, dev);
    check_arg(w, "weight", {D}, kFloat, dev);
    check_arg(dw, "dweight", {D}, kF32, dev);
    check_arg(rstd, "rstd", {T}, kF32, dev);
    enqueue(dev, "rmsnorm_backward", Io().out(dx).inout(dw).in(dout).in(x).in(w).in(rstd), [=] {
      RmsNormBackwardArgs a{dx.view(), dw.view(), dout.view(), x.view(), w.view(), rstd.view()};
      if (dev->type == kCPU) return cpu::rmsnorm_backward(a);
      cuda_call(dev, "rmsnorm_backward", &a);
    });
    return info.Env().Undefined();
  });
}

// ffnForward(y, x, normW, projW, outW, rstd | null, h | null, eps); rstd without h: training that
// recomputes h in backward (CPU only)
Napi::Value FfnForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg y = tensor_arg(info[0], "y"), x = tensor_arg(info[1], "x"), nw = tensor_arg(info[2], "ff_norm.weight"),
              pw = tensor_arg(info[3], "ff_proj.weight"), ow = tensor_arg(info[4], "ff_out.weight");
    bool keep = !info[5].IsNull() && !info[5].IsUndefined();
    bool keep_h = keep && !info[6].IsNull() && !info[6].IsUndefined();
    TensorArg rstd = keep ? tensor_arg(info[5], "rstd") : TensorArg{}, h = keep_h ? tensor_arg(info[6], "h") : TensorArg{};
    float eps = float(num_arg(info[7], "eps"));
    Device* dev = x.device;
    int64_t T = x.meta.shape[0], D = x.meta.ndim == 2 ? x.meta.shape[1] : -1, I = ow.meta.ndim == 2 ? ow.meta.shape[1] : -1;
    check_arg(x, "x", {T, D}, kF32, dev);
    check_arg(y, "y", {T, D}, kF32, dev);
    check_arg(nw, "ff_norm.weight", {D}, kFloat, dev);
    check_arg(pw, "ff_proj.weight", {2 * I, D}, kFloat, dev);
    check_arg(ow, "ff_out.weight", {D, I}, kFloat, dev);
    if (keep) {
      check_arg(rstd, "rstd", {T}, kF32, dev);
      if (keep_h) check_arg(h, "h", {T, 2 * I}, kFloat, dev);  // bfloat16 under bf16-mixed
      else if (dev->type != kCPU) fail("ERR_UNSUPPORTED", "recompute 'ffn' is implemented on cpu only");
    }
    enqueue(dev, "ffn_forward", Io().out(y).out(rstd).out(h).in(x).in(nw).in(pw).in(ow), [=] {
      FfnForwardArgs a{y.view(), x.view(), nw.view(), pw.view(), ow.view(), keep ? rstd.view() : View{},
                       keep_h ? h.view() : View{}, eps};
      if (dev->type == kCPU) return cpu::ffn_forward(a);
      cuda_call(dev, "ffn_forward", &a);
    });
    return info.Env().Undefined();
  });
}

// ffnBackward(dx, dnormW, dprojW, doutW, dy, x, normW, projW, outW, rstd, h | null, eps, hBf16?); h null:
// recompute the pre-activations from x and rstd (CPU only), rounded to bfloat16 when hBf16 (the
// dtype the forward saves them in under bf16-mixed)
Napi::Value FfnBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    const char* names[] = {"dx", "d ff_norm.weight", "d ff_proj.weight", "d ff_out.weight", "dy", "x",
                           "ff_norm.weight", "ff_proj.weight", "ff_out.weight", "rstd", "h"};
    TensorArg t[11];
    const bool keep_h = !info[10].IsNull() && !info[10].IsUndefined();
    for (int i = 0; i < (keep_h ? 11 : 10); i++) t[i] = tensor_arg(info[i], names[i]);
    float eps = float(num_arg(info[11], "eps"));
    Device* dev = t[5].device;
    int64_t T = t[5].meta.shape[0], D = t[5].meta.ndim == 2 ? t[5].meta.shape[1] : -1;
    int64_t I = t[8].meta.ndim == 2 ? t[8].meta.shape[1] : -1;
    const std::initializer_list<int64_t> shapes[] = {{T, D}, {D}, {2 * I, D}, {D, I}, {T, D}, {T, D},
                                                     {D}, {2 * I, D}, {D, I}, {T}, {T, 2 * I}};
    // weights and the saved pre-activations h may be bfloat16
    for (int i = 0; i < (keep_h ? 11 : 10); i++)
      check_arg(t[i], names[i], shapes[i], (i >= 6 && i <= 8) || i == 10 ? kFloat : kF32, dev);
    if (!keep_h && dev->type != kCPU) fail("ERR_UNSUPPORTED", "recompute 'ffn' is implemented on cpu only");
    // recompute under bf16-mixed: the recomputed h is rounded to bfloat16, as the forward saves it
    View hv;
    if (!keep_h && info.Length() > 12 && !info[12].IsUndefined() && bool_arg(info[12], "hBf16")) hv.dtype = BF16;
    Io io;
    io.out(t[0]);
    for (int i = 1; i <= 3; i++) io.inout(t[i]);  // weight gradients accumulate
    for (int i = 4; i < 11; i++) io.in(t[i]);
    enqueue(dev, "ffn_backward", io, [=] {
      FfnBackwardArgs a{t[0].view(), t[1].view(), t[2].view(), t[3].view(), t[4].view(), t[5].view(),
                        t[6].view(), t[7].view(), t[8].view(), t[9].view(), keep_h ? t[10].view() : hv, eps};
      if (dev->type == kCPU) return cpu::ffn_backward(a);
      cuda_call(dev, "ffn_backward", &a);
    });
    return info.Env().Undefined();
  });
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("rmsnormForward", Napi::Function::New(env, RmsNormForward));
  exports.Set("rmsnormBackward", Napi::Function::New(env, RmsNormBackward));
  exports.Set("ffnForward", Napi::Function::New(env, FfnForward));
  exports.Set("ffnBackward", Napi::Function::New(env, FfnBackward));
}
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
