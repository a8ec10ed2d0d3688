// matmul entry point: validation of what JS cannot see, then the GEMM on the tensors' device.
#include <vector>

#include "../core/dtype.h"
#include "../core/ops.h"
#include "../cpu/gemm.h"
#include "common.h"

namespace vffn::napi {

namespace {

void cpu_gemm(const GemmArgs& g) {
  int64_t M = g.c.shape[0], N = g.c.shape[1];
  int64_t K = g.trans_a ? g.a.shape[0] : g.a.shape[1];
  cpu::Mat A{g.a.data, g.a.dtype, g.a.stride[0], g.trans_a, nullptr};
  cpu::Mat B{g.b.data, g.b.dtype, g.b.stride[0], g.trans_b, nullptr};
  if (g.c.dtype == F32) return cpu::gemm(M, N, K, g.alpha, A, B, g.beta, g.c.ptr<float>(), g.c.stride[0]);
  // bfloat16 output: accumulate in a float32 tile, round once
  std::vector<float> tmp(size_t(M * N));
  const uint16_t* c16 = g.c.ptr<uint16_t>();
  if (g.beta != 0.f)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) tmp[size_t(i * N + j)] = bf16_to_f32(c16[i * g.c.stride[0] + j]);
  cpu::gemm(M, N, K, g.alpha, A, B, g.beta, tmp.data(), N);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) g.c.ptr<uint16_t>()[i * g.c.stride[0] + j] = f32_to_bf16(tmp[size_t(i * N + j)]);
}

void check_matrix(const TensorArg& t, const char* name) {
  if (t.meta.ndim != 2)
    fail("ERR_SHAPE", std::string(name) + ": expected a 2-D tensor, got " + std::to_string(t.meta.ndim) + " dimensions");
  if (t.meta.dtype != F32 && t.meta.dtype != BF16)
    fail("ERR_DTYPE", std::string(name) + ": expected float32 or bfloat16, got " + dtype_name(t.meta.dtype));
  if (t.meta.shape[1] > 1 && t.meta.stride[1] != 1)
    fail("ERR_ARGUMENT", std::string(name) + ": rows must be contiguous (last stride 1); call contiguous() first");
}

// gemm(c, a, b, transA, transB, alpha, beta)
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg c = tensor_arg(info[0], "out"), a = tensor_arg(info[1], "a"), b = tensor_arg(info[2], "b");
    bool ta = bool_arg(info[3], "transposeA"), tb = bool_arg(info[4], "transposeB");
    float alpha = float(num_arg(info[5], "alpha")), beta = float(num_arg(info[6], "beta"));
    check_matrix(c, "out");
    check_matrix(a, "a");
    check_matrix(b, "b");
    if (a.device != c.device || b.device != c.device) fail("ERR_DEVICE", "b: all operands must be on one device");
    int64_t M = ta ? a.meta.shape[1] : a.meta.shape[0], K = ta ? a.meta.shape[0] : a.meta.shape[1];
    int64_t Kb = tb ? b.meta.shape[1] : b.meta.shape[0], N = tb ? b.meta.shape[0] : b.meta.shape[1];
    if (K != Kb) fail("ERR_SHAPE", "b: inner dimensions differ (" + std::to_string(K) + " vs " + std::to_string(Kb) + ")");
    if (c.meta.shape[0] != M || c.meta.shape[1] != N) fail("ERR_SHAPE", "out: shape does not match [M, N]");
    Device* dev = c.device;
    enqueue(dev, "matmul", (beta == 0.f ? Io().out(c) : Io().inout(c)).in(a).in(b), [c, a, b, ta, tb, alpha, beta, dev] {
      GemmArgs g{c.view(), a.view(), b.view(), ta, tb, alpha, beta};
      if (dev->type == kCPU) return cpu_gemm(g);
      cuda_call(dev, "gemm", &g);
    });
    return info.Env().Undefined();
  });
}

void Register(Napi::Env env, Napi::Object exports) { exports.Set("gemm", Napi::Function::New(env, Gemm)); }
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
