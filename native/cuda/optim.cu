// AdamW with decoupled weight decay, the global gradient-norm clip it reads, and axpy, on CUDA.
// the norm is summed in double in fixed chunks and then in chunk order (one block), so it does
// not depend on scheduling; the clip coefficient stays on the device for adamw_step to read.
#include <cmath>

#include "../core/lm_args.h"
#include "common.cuh"

namespace vffn::cuda {
namespace {

constexpr int kNormThreads = 256;
constexpr int64_t kChunk = 1 << 14;

// part[c] = Σ g² over chunk c of one gradient, in double, a fixed tree order within the block
__global__ void sum_squares_kernel(const float* g, int64_t n, double* part) {
  __shared__ double red[kNormThreads];
  const int64_t c0 = int64_t(blockIdx.x) * kChunk, c1 = min(n, c0 + kChunk);
  double s = 0;
  for (int64_t i = c0 + threadIdx.x; i < c1; i += kNormThreads) s += double(g[i]) * double(g[i]);
  red[threadIdx.x] = s;
  __syncthreads();
  for (int w = kNormThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}

__global__ void norm_finish_kernel(const double* part, int64_t parts, float max_norm, float* out) {
  if (threadIdx.x != 0) return;
  double s = 0;
  for (int64_t i = 0; i < parts; i++) s += part[i];
  const double norm = sqrt(s);
  out[0] = float(norm);
  out[1] = float(max_norm > 0 ? fmin(1.0, double(max_norm) / (norm + 1e-6)) : 1.0);
}

__global__ void adamw_kernel(float* p, float* m, float* v, const float* g, const float* clip, int64_t n, float lr,
                             float b1, float b2, float eps, float wd, float bc1, float bc2, uint16_t* copy) {
  // a non-finite global norm would poison every parameter and moment: the step is skipped
  if (clip && !isfinite(clip[0])) return;
  const float cl = clip ? clip[1] : 1.f;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] * cl;
    const float mi = m[i] = b1 * m[i] + (1.f - b1) * gi;
    const float vi = v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
    const float pi = p[i] -= lr * (wd * p[i] + (mi / bc1) / (sqrtf(vi / bc2) + eps));
    if (copy) copy[i] = f32_to_bf16_bits(pi);
  }
}

__global__ void axpy_kernel(float* y, const float* x, float alpha, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += alpha * x[i];
}

}  // namespace
}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

VFFN_CUDA_EXPORT int vffn_cuda_grad_norm(int dev, const void* args) {
  return entry([&] {
    const GradNormArgs& a = *static_cast<const GradNormArgs*>(args);
    require(a.out.dtype == F32 && a.out.numel() >= 2, "grad_norm: out must be float32 [2]");
    int64_t parts = 0;
    for (int64_t i = 0; i < a.count; i++) {
      require(a.grads[i].dtype == F32 && a.grads[i].contiguous(), "grad_norm: gradients must be contiguous float32");
      parts += (a.grads[i].numel() + kChunk - 1) / kChunk;
    }
    cudaStream_t st = stream(dev);
    Scratch part(dev, size_t(parts > 0 ? parts : 1) * sizeof(double));
    int64_t at = 0;
    for (int64_t i = 0; i < a.count; i++) {
      const int64_t n = a.grads[i].numel(), c = (n + kChunk - 1) / kChunk;
      if (c) sum_squares_kernel<<<unsigned(c), kNormThreads, 0, st>>>(a.grads[i].ptr<float>(), n, part.as<double>() + at);
      at += c;
    }
    check_launch("grad_norm");
    norm_finish_kernel<<<1, 32, 0, st>>>(part.as<double>(), parts, a.max_norm, a.out.ptr<float>());
    check_launch("grad_norm");
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_adamw_step(int dev, const void* args) {
  return entry([&] {
    const AdamWArgs& a = *static_cast<const AdamWArgs*>(args);
    const int64_t n = a.param.numel();
    require(a.param.dtype == F32 && a.m.dtype == F32 && a.v.dtype == F32 && a.grad.dtype == F32,
            "adamw_step: param, moments and grad must be float32");
    require(a.m.numel() == n && a.v.numel() == n && a.grad.numel() == n && a.param.contiguous() && a.m.contiguous() &&
                a.v.contiguous() && a.grad.contiguous(),
            "adamw_step: param, m, v and grad must be contiguous and of one size");
    require(!a.copy.data || (a.copy.dtype == BF16 && a.copy.numel() == n && a.copy.contiguous()),
            "adamw_step: copy must be a contiguous bfloat16 of the param's size");
    cudaStream_t st = stream(dev);
    if (n == 0) return;
    const float bc1 = float(1.0 - std::pow(double(a.beta1), double(a.step)));
    const float bc2 = float(1.0 - std::pow(double(a.beta2), double(a.step)));
    adamw_kernel<<<blocks_for(n, 256, 1u << 20), 256, 0, st>>>(a.param.ptr<float>(), a.m.ptr<float>(), a.v.ptr<float>(),
                                                              a.grad.ptr<float>(), a.clip.data ? a.clip.ptr<float>() : nullptr,
                                                              n, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, bc1, bc2,
                                                              a.copy.data ? a.copy.ptr<uint16_t>() : nullptr);
    check_launch("adamw_step");
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_axpy(int dev, const void* args) {
  return entry([&] {
    const AxpyArgs& a = *static_cast<const AxpyArgs*>(args);
    const int64_t n = a.y.numel();
    require(a.y.dtype == F32 && a.x.dtype == F32 && a.x.numel() == n && a.x.contiguous() && a.y.contiguous(),
            "axpy: y and x must be contiguous float32 of one size");
    cudaStream_t st = stream(dev);
    if (n) axpy_kernel<<<blocks_for(n, 256, 1u << 20), 256, 0, st>>>(a.y.ptr<float>(), a.x.ptr<float>(), a.alpha, n);
    check_launch("axpy");
  });
}
