// test hook for the GEMM's row gather (cpu::Mat::rows), which layers use internally and matmul
// does not expose: _gemmRows(c, a, rows, b, transB, alpha, beta[, bf16Math]) computes
// C = alpha * A[rows] * op(B) + beta * C, with A [R, K] and rows int32 [M], on the CPU or on one
// CUDA device (the CUDA GEMM's gather; bf16Math rounds a float32 operand to bfloat16 when the
// other is bfloat16, as the layers ask; the CPU ignores it).
#include "../core/dtype.h"
#include "../core/ops.h"
#include "../cpu/gemm.h"
#include "common.h"

namespace vffn::napi {

namespace {


Napi::Value GemmRows(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg c = tensor_arg(info[0], "out"), a = tensor_arg(info[1], "a"), rows = tensor_arg(info[2], "rows");
    TensorArg b = tensor_arg(info[3], "b");
    bool tb = bool_arg(info[4], "transposeB");
    float alpha = float(num_arg(info[5], "alpha")), beta = float(num_arg(info[6], "beta"));
    const bool bf16_math = info.Length() > 7 && !info[7].IsUndefined() && bool_arg(info[7], "bf16Math");
    for (const TensorArg* t : {&c, &a, &b}) {
      need(t->meta.ndim == 2, "ERR_SHAPE", "_gemmRows: operands must be 2-D");
      need(t->meta.shape[1] <= 1 || t->meta.stride[1] == 1, "ERR_ARGUMENT", "_gemmRows: rows must be contiguous");
    }
    need(a.device == c.device && b.device == c.device && rows.device == c.device, "ERR_DEVICE",
         "_gemmRows: all operands must be on one device");
    need(c.meta.dtype == F32, "ERR_DTYPE", "_gemmRows: out must be float32");
    need(a.meta.dtype != I32 && b.meta.dtype != I32, "ERR_DTYPE", "_gemmRows: a and b must be float32 or bfloat16");
    need(rows.meta.dtype == I32 && rows.meta.ndim == 1 && (rows.meta.shape[0] <= 1 || rows.meta.stride[0] == 1),
         "ERR_DTYPE", "_gemmRows: rows must be a contiguous 1-D int32 tensor");
    const int64_t M = rows.meta.shape[0], K = a.meta.shape[1], R = a.meta.shape[0];
    const int64_t N = tb ? b.meta.shape[0] : b.meta.shape[1];
    need((tb ? b.meta.shape[1] : b.meta.shape[0]) == K, "ERR_SHAPE", "_gemmRows: inner dimensions differ");
    need(c.meta.shape[0] == M && c.meta.shape[1] == N, "ERR_SHAPE", "_gemmRows: out must be [rows, N]");
    Device* dev = c.device;
    enqueue(dev, "gemm_rows", (beta == 0.f ? Io().out(c) : Io().inout(c)).in(a).in(rows).in(b), [c, a, rows, b, tb, alpha, beta, M, N, K, R, dev, bf16_math] {
      View cv = c.view(), av = a.view(), rv = rows.view(), bv = b.view();
      if (dev->type != kCPU) {
        GemmRowsArgs g{cv, av, rv, bv, tb, bf16_math, alpha, beta};
        return cuda_call(dev, "gemm_rows", &g);
      }
      const int32_t* r = rv.ptr<int32_t>();
      for (int64_t i = 0; i < M; i++) need(r[i] >= 0 && r[i] < R, "ERR_ARGUMENT", "_gemmRows: a row index is out of range");
      cpu::Mat A{av.data, av.dtype, av.stride[0], false, r};
      cpu::Mat B{bv.data, bv.dtype, bv.stride[0], tb, nullptr};
      cpu::gemm(M, N, K, alpha, A, B, beta, cv.ptr<float>(), cv.stride[0]);
    });
    return info.Env().Undefined();
  });
}

void Register(Napi::Env env, Napi::Object exports) { exports.Set("_gemmRows", Napi::Function::New(env, GemmRows)); }
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
