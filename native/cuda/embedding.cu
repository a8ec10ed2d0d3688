// token embedding on CUDA: gather rows of wte (forward), scatter-add into them (backward).
// backward is deterministic: positions are stably sorted by id (radix sort), and one thread per
// (id, column) sums its tokens' gradients in token order, so every run gives the same bits.
// T tokens, D width, V vocabulary rows. an id outside [0, V) must fail before anything is written
// (lm_args.h): checked on the device, the op's kernel skips when flagged, and the op's worker
// reads the flag back and fails (common.cuh: finish_index_check).
#include <cub/device/device_radix_sort.cuh>

#include "../core/lm_args.h"
#include "common.cuh"

namespace vffn::cuda {

namespace {

// bad[0] = the first position whose id is outside [0, V) (kNoBadIndex: none)
__global__ void check_ids_kernel(int64_t T, const int32_t* ids, int64_t V, int32_t* bad) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t < T && (ids[t] < 0 || ids[t] >= V)) atomicMin(bad, int32_t(t));
}

// bad[1] = the id found there, for the message
__global__ void record_id_kernel(const int32_t* ids, int32_t* bad) {
  if (bad[0] != kNoBadIndex) bad[1] = ids[bad[0]];
}

__global__ void embedding_forward_kernel(int64_t T, int64_t D, const int32_t* ids, const void* w, int w_dtype,
                                         int64_t ldw, float* out, int64_t ldo, const int32_t* bad) {
  if (*bad != kNoBadIndex) return;
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, j = i - t * D;
    out[t * ldo + j] = load_f(w, w_dtype, int64_t(ids[t]) * ldw + j);  // bf16 widens exactly
  }
}

// sorted[s], tok[s]: the ids in ascending order and their positions (in token order among equal
// ids). the thread of (s, j) where a run of equal ids starts sums the run's column j, in order
__global__ void embedding_backward_kernel(int64_t T, int64_t D, const int32_t* sorted, const int32_t* tok,
                                          const float* g, int64_t ldg, float* dw, int64_t ldw, const int32_t* bad) {
  if (*bad != kNoBadIndex) return;
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = i / D, j = i - s * D;
    const int32_t id = sorted[s];
    if (s > 0 && sorted[s - 1] == id) continue;
    float v = 0.f;
    for (int64_t r = s; r < T && sorted[r] == id; r++) v += g[int64_t(tok[r]) * ldg + j];
    dw[int64_t(id) * ldw + j] += v;
  }
}

__global__ void iota_kernel(int64_t n, int32_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = int32_t(i);
}

// ids sorted stably with their positions; only the bits below V matter (bad ids are flagged
// and their kernel skips, whatever order they land in)
void sort_ids(int dev, int64_t T, int64_t V, const int32_t* ids, int32_t* sorted, int32_t* tok) {
  cudaStream_t st = stream(dev);
  require(T <= INT_MAX, "embedding_backward: more than 2^31 tokens");
  Scratch pos(dev, size_t(T) * 4);
  iota_kernel<<<blocks_for(T, 256, 1u << 30), 256, 0, st>>>(T, pos.as<int32_t>());
  check_launch("embedding_backward");
  int bits = 1;
  while (bits < 31 && (int64_t(1) << bits) < V) bits++;
  size_t temp_bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, ids, sorted, pos.as<int32_t>(), tok, int(T), 0, bits, st),
        "embedding_backward sort");
  Scratch temp(dev, std::max<size_t>(temp_bytes, 1));
  check(cub::DeviceRadixSort::SortPairs(temp.ptr, temp_bytes, ids, sorted, pos.as<int32_t>(), tok, int(T), 0, bits, st),
        "embedding_backward sort");
}

// the check, then `op` (which must skip its writes when bad[0] is set), then the check read back
template <class Op>
void with_checked_ids(int dev, const View& tokens, int64_t V, Op&& op) {
  cudaStream_t st = stream(dev);
  int32_t* bad = static_cast<int32_t*>(alloc(dev, 2 * sizeof(int32_t)));
  try {
    check(cudaMemsetAsync(bad, 0x7f, sizeof(int32_t), st), "embedding");
    const int64_t T = tokens.numel();
    if (T) {
      check_ids_kernel<<<blocks_for(T, 256, 1u << 30), 256, 0, st>>>(T, tokens.ptr<int32_t>(), V, bad);
      record_id_kernel<<<1, 1, 0, st>>>(tokens.ptr<int32_t>(), bad);
    }
    check_launch("embedding");
    op(bad);
  } catch (...) {
    release(dev, bad);
    throw;
  }
  finish_index_check(dev, bad, "tokens", V);
}

}  // namespace
}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

VFFN_CUDA_EXPORT int vffn_cuda_embedding_forward(int dev, const void* args) {
  return entry([&] {
    const EmbeddingForwardArgs& a = *static_cast<const EmbeddingForwardArgs*>(args);
    require((a.weight.dtype == F32 || a.weight.dtype == BF16) && a.out.dtype == F32 && a.tokens.dtype == I32 &&
                a.tokens.contiguous() && a.weight.ndim == 2 && a.weight.stride[1] == 1,
            "embedding: float32|bfloat16 weight [V, D], float32 out, contiguous int32 tokens");
    const int64_t T = a.tokens.numel(), D = a.weight.shape[1], V = a.weight.shape[0];
    with_checked_ids(dev, a.tokens, V, [&](const int32_t* bad) {
      if (T * D)
        embedding_forward_kernel<<<blocks_for(T * D, 256, 1u << 20), 256, 0, stream(dev)>>>(
            T, D, a.tokens.ptr<int32_t>(), a.weight.data, a.weight.dtype, a.weight.stride[0], a.out.ptr<float>(),
            a.out.stride[0], bad);
      check_launch("embedding");
    });
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_embedding_backward(int dev, const void* args) {
  return entry([&] {
    const EmbeddingBackwardArgs& a = *static_cast<const EmbeddingBackwardArgs*>(args);
    require(a.dweight.dtype == F32 && a.dout.dtype == F32 && a.tokens.dtype == I32 && a.tokens.contiguous(),
            "embedding_backward: float32 dweight and dout, contiguous int32 tokens");
    const int64_t T = a.tokens.numel(), D = a.dweight.shape[1], V = a.dweight.shape[0];
    with_checked_ids(dev, a.tokens, V, [&](const int32_t* bad) {
      if (T * D == 0) return;
      Scratch sorted(dev, size_t(T) * 4), tok(dev, size_t(T) * 4);
      sort_ids(dev, T, V, a.tokens.ptr<int32_t>(), sorted.as<int32_t>(), tok.as<int32_t>());
      embedding_backward_kernel<<<blocks_for(T * D, 256, 1u << 20), 256, 0, stream(dev)>>>(
          T, D, sorted.as<int32_t>(), tok.as<int32_t>(), a.dout.ptr<float>(), a.dout.stride[0], a.dweight.ptr<float>(),
          a.dweight.stride[0], bad);
      check_launch("embedding_backward");
    });
  });
}
