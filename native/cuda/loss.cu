// fused softmax cross-entropy on CUDA: T tokens, V classes. forward keeps each row's log-sum-exp
// and sums the row losses in token order (one block, double); backward writes (softmax − onehot)
// scaled by dloss / counted tokens. a target outside [0, V) other than ignore_index must fail
// (lm_args.h): checked on the device (with the count of targets), the kernels skip when flagged,
// and the op's worker reads the flag back and fails (common.cuh: finish_index_check).
#include <cfloat>

#include "../core/lm_args.h"
#include "common.cuh"

namespace vffn::cuda {
namespace {

constexpr int kRowThreads = 256;

// info[0] = first bad position (kNoBadIndex: none), info[1] = its target, info[2] = counted targets
__global__ void check_targets_kernel(int64_t T, const int32_t* tg, int64_t V, int64_t ignore, int32_t* info) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T || tg[t] == ignore) return;
  if (tg[t] < 0 || tg[t] >= V) atomicMin(info, int32_t(t));
  else atomicAdd(info + 2, 1);
}

__global__ void record_target_kernel(const int32_t* tg, int32_t* info) {
  if (info[0] != kNoBadIndex) info[1] = tg[info[0]];
}

__device__ float block_max(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  v = -FLT_MAX;
  for (int w = 0; w < kRowThreads / 32; w++) v = fmaxf(v, red[w]);
  __syncthreads();
  return v;
}

// one block per row: lse and the row's loss (0 for ignored rows)
__global__ void ce_forward_kernel(int64_t V, const float* x, int64_t ld, const int32_t* tg, int64_t ignore,
                                  const int32_t* info, float* lse, double* row_loss) {
  __shared__ float red[kRowThreads / 32];
  __shared__ double dred[kRowThreads];
  if (info[0] != kNoBadIndex) return;
  const int64_t t = blockIdx.x;
  const float* r = x + t * ld;
  float mx = -FLT_MAX;
  for (int64_t j = threadIdx.x; j < V; j += kRowThreads) mx = fmaxf(mx, r[j]);
  mx = block_max(mx, red);
  double s = 0;
  for (int64_t j = threadIdx.x; j < V; j += kRowThreads) s += exp(double(r[j] - mx));
  dred[threadIdx.x] = s;
  __syncthreads();
  for (int w = kRowThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) dred[threadIdx.x] += dred[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double l = double(mx) + log(dred[0]);
    lse[t] = float(l);
    row_loss[t] = tg[t] == ignore ? 0.0 : l - double(r[tg[t]]);
  }
}

__global__ void ce_total_kernel(int64_t T, const double* row_loss, const int32_t* info, float* loss) {
  if (threadIdx.x != 0 || info[0] != kNoBadIndex) return;
  double total = 0;
  for (int64_t t = 0; t < T; t++) total += row_loss[t];
  loss[0] = info[2] > 0 ? float(total / double(info[2])) : 0.f;
}

__global__ void ce_backward_kernel(int64_t T, int64_t V, float* d, int64_t ldd, const float* x, int64_t ld,
                                   const float* lse, const int32_t* tg, int64_t ignore, float dloss,
                                   const int32_t* info) {
  if (info[0] != kNoBadIndex) return;
  const float g = info[2] > 0 ? dloss / float(info[2]) : 0.f;
  const int64_t total = T * V;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / V, j = i - t * V;
    const float r = x[t * ld + j];  // read before the write: dlogits may alias logits
    float o = 0.f;
    if (tg[t] != ignore) o = g * __expf(r - lse[t]) - (j == tg[t] ? g : 0.f);
    d[t * ldd + j] = o;
  }
}

// the check, then `op` (whose kernels skip when info[0] is set), then the check read back
template <class Op>
void with_checked_targets(int dev, const View& targets, int64_t V, int64_t ignore, Op&& op) {
  cudaStream_t st = stream(dev);
  int32_t* info = static_cast<int32_t*>(alloc(dev, 3 * sizeof(int32_t)));
  try {
    check(cudaMemsetAsync(info, 0x7f, sizeof(int32_t), st), "cross_entropy");
    check(cudaMemsetAsync(info + 2, 0, sizeof(int32_t), st), "cross_entropy");
    const int64_t T = targets.numel();
    if (T) {
      check_targets_kernel<<<blocks_for(T, 256, 1u << 30), 256, 0, st>>>(T, targets.ptr<int32_t>(), V, ignore, info);
      record_target_kernel<<<1, 1, 0, st>>>(targets.ptr<int32_t>(), info);
    }
    check_launch("cross_entropy");
    op(info);
  } catch (...) {
    release(dev, info);
    throw;
  }
  finish_index_check(dev, info, "targets", V);
}

}  // namespace
}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

VFFN_CUDA_EXPORT int vffn_cuda_cross_entropy_forward(int dev, const void* args) {
  return entry([&] {
    const CrossEntropyForwardArgs& a = *static_cast<const CrossEntropyForwardArgs*>(args);
    require(a.logits.dtype == F32 && a.logits.ndim == 2 && a.logits.stride[1] == 1 && a.targets.dtype == I32 &&
                a.targets.contiguous() && a.lse.dtype == F32 && a.lse.contiguous() && a.loss.dtype == F32,
            "cross_entropy: float32 logits [T, V] with unit last stride, int32 targets [T]");
    const int64_t T = a.logits.shape[0], V = a.logits.shape[1];
    require(T <= 2147483647 && a.targets.numel() == T, "cross_entropy: targets must be [T]");
    cudaStream_t st = stream(dev);
    Scratch rows(dev, size_t(T > 0 ? T : 1) * sizeof(double));
    with_checked_targets(dev, a.targets, V, a.ignore_index, [&](const int32_t* info) {
      if (T)
        ce_forward_kernel<<<unsigned(T), kRowThreads, 0, st>>>(V, a.logits.ptr<float>(), a.logits.stride[0],
                                                              a.targets.ptr<int32_t>(), a.ignore_index, info,
                                                              a.lse.ptr<float>(), rows.as<double>());
      ce_total_kernel<<<1, 32, 0, st>>>(T, rows.as<double>(), info, a.loss.ptr<float>());
      check_launch("cross_entropy");
    });
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_cross_entropy_backward(int dev, const void* args) {
  return entry([&] {
    const CrossEntropyBackwardArgs& a = *static_cast<const CrossEntropyBackwardArgs*>(args);
    require(a.logits.dtype == F32 && a.dlogits.dtype == F32 && a.logits.ndim == 2 && a.dlogits.ndim == 2 &&
                a.logits.stride[1] == 1 && a.dlogits.stride[1] == 1 && a.targets.dtype == I32 && a.targets.contiguous(),
            "cross_entropy_backward: float32 logits and dlogits [T, V] with unit last stride, int32 targets");
    const int64_t T = a.logits.shape[0], V = a.logits.shape[1];
    cudaStream_t st = stream(dev);
    with_checked_targets(dev, a.targets, V, a.ignore_index, [&](const int32_t* info) {
      if (T * V)
        ce_backward_kernel<<<blocks_for(T * V, 256, 1u << 20), 256, 0, st>>>(
            T, V, a.dlogits.ptr<float>(), a.dlogits.stride[0], a.logits.ptr<float>(), a.logits.stride[0],
            a.lse.ptr<float>(), a.targets.ptr<int32_t>(), a.ignore_index, a.dloss, info);
      check_launch("cross_entropy_backward");
    });
  });
}
