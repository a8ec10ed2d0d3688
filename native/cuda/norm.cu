// RMSNorm on CUDA, forward and backward, float32 math (SPEC.md: n = x·rstd ⊙ w, eps 1e-6).
// one warp per row; the weight gradient is a column sum over rows: fixed row chunks each sum in
// row order, then one pass adds the chunks in chunk order, so every run gives the same bits.
#include <algorithm>
#include <climits>

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

constexpr int kWeightRows = 256;      // rows per chunk of the weight gradient, at least
constexpr int kMaxWeightChunks = 1024;  // chunks (grid y) at most: long inputs get longer chunks

// part[c][j] = Σ over chunk c's rows of dn_j x_j r, in row order: blockIdx.y picks the chunk
__global__ void rmsnorm_weight_part_kernel(int64_t M, int D, const float* dn, int64_t ldd, const float* x, int64_t ldx,
                                           const float* rstd, int64_t chunk, float* part, const int* m_limit) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= D) return;
  const int64_t rows = live_rows(M, m_limit), r0 = int64_t(blockIdx.y) * chunk, r1 = min(rows, r0 + chunk);
  float s = 0.f;
  for (int64_t i = r0; i < r1; i++) s += dn[i * ldd + j] * x[i * ldx + j] * rstd[i];
  part[int64_t(blockIdx.y) * D + j] = s;  // 0 for chunks past the live rows
}

// dw_j += Σ_c part[c][j], chunks in order
__global__ void rmsnorm_weight_sum_kernel(int D, int chunks, const float* part, float* dw) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= D) return;
  float s = 0.f;
  for (int c = 0; c < chunks; c++) s += part[int64_t(c) * D + j];
  dw[j] += s;
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
  if (M == 0 || D == 0) return;  // D = 0: nothing to write, and an empty grid is a launch error
  require(D <= INT_MAX - 256, "rmsnorm_backward: rows wider than 2^31");
  // the weight gradient first: dx may alias dn. the chunking depends on M alone (not on the
  // device-side row count), so the sum order is the same on every run
  if (dw) {
    const int64_t chunks = std::min<int64_t>((M + kWeightRows - 1) / kWeightRows, kMaxWeightChunks);
    const int64_t chunk = (M + chunks - 1) / chunks;
    Scratch part(dev, size_t(chunks * D) * sizeof(float));
    const unsigned gx = unsigned((D + 255) / 256);
    rmsnorm_weight_part_kernel<<<dim3(gx, unsigned(chunks)), 256, 0, st>>>(M, int(D), dn, ldd, x, ldx, rstd, chunk,
                                                                          part.as<float>(), m_limit);
    rmsnorm_weight_sum_kernel<<<gx, 256, 0, st>>>(int(D), int(chunks), part.as<float>(), dw);
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
