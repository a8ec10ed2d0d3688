// RMSNorm on CUDA, forward and backward, float32 math (SPEC.md: n = x·rstd ⊙ w, eps 1e-6).
// one warp per row; the weight gradient is a column sum over rows, split into row chunks that
// meet in float32 atomics (order-dependent in the last bits; the CPU sums serially).
#include "../core/ffn_args.h"
#include "ffn.cuh"

namespace vffn::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // 8 warps, one row each

__device__ __forceinline__ int live_rows(int64_t M, const int* m_limit) {
  return int(m_limit ? min(M, int64_t(*m_limit)) : M);
}

__global__ void rmsnorm_forward_kernel(int64_t M, int D, const float* x, int64_t ldx, const void* w, int w_dtype,
                                       float eps, void* out, int out_dtype, int64_t ldo, float* rstd, int use_saved,
                                       const int* m_limit) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= live_rows(M, m_limit)) return;
  const float* xr = x + row * ldx;
  float r;
  if (use_saved) {
    r = rstd[row];
  } else {
    float ss = 0.f;
    for (int j = lane; j < D; j += 32) ss += xr[j] * xr[j];
    ss = warp_sum(ss);
    r = rsqrtf(ss / float(D) + eps);
    if (rstd && lane == 0) rstd[row] = r;
  }
  for (int j = lane; j < D; j += 32) store_f(out, out_dtype, row * ldo + j, xr[j] * r * load_f(w, w_dtype, j));
}

// dx_j = r w_j dn_j − x_j r³/D · Σ_k dn_k w_k x_k
__global__ void rmsnorm_backward_kernel(int64_t M, int D, const float* dn, int64_t ldd, const float* x, int64_t ldx,
                                        const void* w, int w_dtype, const float* rstd, float* dx, int64_t lddx,
                                        int accumulate, const int* m_limit) {
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= live_rows(M, m_limit)) return;
  const float* g = dn + row * ldd;
  const float* xr = x + row * ldx;
  float dot = 0.f;
  for (int j = lane; j < D; j += 32) dot += g[j] * load_f(w, w_dtype, j) * xr[j];
  dot = warp_sum(dot);
  const float r = rstd[row], c = dot * r * r * r / float(D);
  float* o = dx + row * lddx;
  for (int j = lane; j < D; j += 32) {
    const float v = r * load_f(w, w_dtype, j) * g[j] - xr[j] * c;
    o[j] = accumulate ? o[j] + v : v;
  }
}

constexpr int kWeightRows = 256;  // rows per block of the weight gradient

// dw_j += Σ_rows dn_j x_j r: blockIdx.y picks a chunk of rows, threads own columns
__global__ void rmsnorm_weight_grad_kernel(int64_t M, int D, const float* dn, int64_t ldd, const float* x, int64_t ldx,
                                           const float* rstd, float* dw, const int* m_limit) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t rows = live_rows(M, m_limit), r0 = int64_t(blockIdx.y) * kWeightRows;
  if (j >= D || r0 >= rows) return;
  const int64_t r1 = min(rows, r0 + kWeightRows);
  float s = 0.f;
  for (int64_t i = r0; i < r1; i++) s += dn[i * ldd + j] * x[i * ldx + j] * rstd[i];
  atomicAdd(dw + j, s);
}

}  // namespace

void rmsnorm_rows(int dev, int64_t M, int64_t D, const float* x, int64_t ldx, const View& w, float eps, void* out,
                  int out_dtype, int64_t ldo, float* rstd, bool use_saved, const int* m_limit) {
  cudaStream_t st = stream(dev);
  if (M == 0) return;
  rmsnorm_forward_kernel<<<blocks_for(M, kRowsPerBlock, 1u << 30), 32 * kRowsPerBlock, 0, st>>>(
      M, int(D), x, ldx, w.data, w.dtype, eps, out, out_dtype, ldo, rstd, use_saved, m_limit);
  check_launch("rmsnorm_forward");
}

void rmsnorm_rows_backward(int dev, int64_t M, int64_t D, const float* dn, int64_t ldd, const float* x, int64_t ldx,
                           const View& w, const float* rstd, float* dx, int64_t lddx, bool accumulate, float* dw,
                           const int* m_limit) {
  cudaStream_t st = stream(dev);
  if (M == 0) return;
  // the weight gradient first: dx may alias dn
  if (dw) {
    dim3 grid(unsigned((D + 255) / 256), unsigned((M + kWeightRows - 1) / kWeightRows));
    rmsnorm_weight_grad_kernel<<<grid, 256, 0, st>>>(M, int(D), dn, ldd, x, ldx, rstd, dw, m_limit);
    check_launch("rmsnorm_backward");
  }
  rmsnorm_backward_kernel<<<blocks_for(M, kRowsPerBlock, 1u << 30), 32 * kRowsPerBlock, 0, st>>>(
      M, int(D), dn, ldd, x, ldx, w.data, w.dtype, rstd, dx, lddx, accumulate, m_limit);
  check_launch("rmsnorm_backward");
}

}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

VFFN_CUDA_EXPORT int vffn_cuda_rmsnorm_forward(int dev, const void* args) {
  return entry([&] {
    const RmsNormArgs& a = *static_cast<const RmsNormArgs*>(args);
    require(a.x.dtype == F32 && a.out.dtype == F32, "rmsnorm: x and out must be float32");
    require_float(a.weight, "weight", 1);
    const int64_t T = a.x.rows(), D = a.x.cols();
    require(a.weight.shape[0] == D && (D <= 1 || a.weight.stride[0] == 1), "rmsnorm: weight must be a contiguous [D]");
    require(a.out.rows() == T && a.out.cols() == D, "rmsnorm: out shape differs from x");
    rmsnorm_rows(dev, T, D, a.x.ptr<float>(), a.x.ld(), a.weight, a.eps, a.out.ptr<float>(), a.out.ld(),
                 a.rstd.data ? a.rstd.ptr<float>() : nullptr, false, nullptr);
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_rmsnorm_backward(int dev, const void* args) {
  return entry([&] {
    const RmsNormBackwardArgs& a = *static_cast<const RmsNormBackwardArgs*>(args);
    require(a.x.dtype == F32 && a.dout.dtype == F32 && a.dx.dtype == F32 && a.dweight.dtype == F32,
            "rmsnorm_backward: activations and gradients must be float32");
    require_float(a.weight, "weight", 1);
    const int64_t T = a.x.rows(), D = a.x.cols();
    require(a.weight.shape[0] == D && (D <= 1 || a.weight.stride[0] == 1), "rmsnorm_backward: weight must be a contiguous [D]");
    require(a.dweight.numel() == D && a.dweight.contiguous(), "rmsnorm_backward: dweight must be a contiguous [D]");
    rmsnorm_rows_backward(dev, T, D, a.dout.ptr<float>(), a.dout.ld(), a.x.ptr<float>(), a.x.ld(), a.weight,
                          a.rstd.ptr<float>(), a.dx.ptr<float>(), a.dx.ld(), false, a.dweight.ptr<float>(), nullptr);
  });
}
