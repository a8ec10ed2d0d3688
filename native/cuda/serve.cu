// serving kernels on CUDA: writes into a paged KV cache and causal attention over it with
// per-sequence lengths (one warp per query row, online softmax, as attention.cu). the index
// tensors (slots, lengths, block tables) are small and come from the host in practice: they are
// copied back and checked before any kernel runs, so a bad one fails the op and writes nothing
// (a stream synchronisation per call; a device-side check is the faster step after this one).
// NB blocks of BS rows, D = H*hd columns, B sequences of Sq queries, MB blocks per sequence.
#include <cmath>
#include <string>
#include <vector>

#include "../core/lm_args.h"
#include "common.cuh"

namespace vffn::cuda {
namespace {

constexpr int kPer = 8;  // head elements per lane: hd <= 32 * kPer

std::vector<int32_t> to_host(int dev, const View& v) {
  std::vector<int32_t> h(size_t(v.numel()));
  if (h.empty()) return h;
  cudaStream_t st = stream(dev);
  check(cudaMemcpyAsync(h.data(), v.data, h.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, st), "serve: read indices");
  check(cudaStreamSynchronize(st), "serve: read indices");
  return h;
}

__global__ void kv_write_kernel(float* kp, float* vp, const float* k, const float* v, int64_t ldk, int64_t ldv,
                                const int32_t* slots, int64_t T, int64_t D) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < T * D; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, c = i - t * D, s = slots[t];
    kp[s * D + c] = k[t * ldk + c];
    vp[s * D + c] = v[t * ldv + c];
  }
}

__global__ void paged_attention_kernel(const float* q, int64_t qb, int64_t qs, float* out, int64_t ob, int64_t os,
                                       const float* kp, const float* vp, const int32_t* table, int64_t lt,
                                       const int32_t* lens, int64_t B, int64_t Sq, int64_t H, int hd, int64_t BS,
                                       float scale) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (w >= B * H * Sq) return;
  const int64_t s = w % Sq, h = (w / Sq) % H, b = w / (Sq * H);
  const int lane = threadIdx.x & 31;
  const int64_t D = H * hd, pos = int64_t(lens[b]) - Sq + s;
  float qr[kPer], acc[kPer];
  const float* qp = q + b * qb + s * qs + h * hd;
#pragma unroll
  for (int u = 0; u < kPer; u++) {
    qr[u] = lane + 32 * u < hd ? qp[lane + 32 * u] * scale : 0.f;
    acc[u] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j <= pos; j++) {
    const int64_t slot = int64_t(table[b * lt + j / BS]) * BS + j % BS;
    const float* kr = kp + slot * D + h * hd;
    const float* vr = vp + slot * D + h * hd;
    float d = 0.f;
#pragma unroll
    for (int u = 0; u < kPer; u++)
      if (lane + 32 * u < hd) d += qr[u] * kr[lane + 32 * u];
    d = warp_sum(d);
    const float mn = fmaxf(m, d), alpha = __expf(m - mn), p = __expf(d - mn);
    l = l * alpha + p;
#pragma unroll
    for (int u = 0; u < kPer; u++)
      if (lane + 32 * u < hd) acc[u] = acc[u] * alpha + p * vr[lane + 32 * u];
    m = mn;
  }
  float* o = out + b * ob + s * os + h * hd;
  const float inv = 1.f / l;
#pragma unroll
  for (int u = 0; u < kPer; u++)
    if (lane + 32 * u < hd) o[lane + 32 * u] = acc[u] * inv;
}

}  // namespace
}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

VFFN_CUDA_EXPORT int vffn_cuda_kv_write(int dev, const void* args) {
  return entry([&] {
    const KvWriteArgs& a = *static_cast<const KvWriteArgs*>(args);
    require(a.k_pool.dtype == F32 && a.k_pool.ndim == 3 && a.k_pool.contiguous() && a.v_pool.contiguous() && a.k.stride[1] == 1 &&
                a.v.stride[1] == 1 && a.slots.dtype == I32 && a.slots.contiguous(),
            "kv_write: contiguous float32 pools [NB, BS, D], rows of k and v with unit last stride, int32 slots");
    const int64_t NB = a.k_pool.shape[0], BS = a.k_pool.shape[1], D = a.k_pool.shape[2], T = a.k.shape[0];
    const std::vector<int32_t> slots = to_host(dev, a.slots);
    for (int64_t t = 0; t < T; t++)
      if (slots[size_t(t)] < 0 || slots[size_t(t)] >= NB * BS)
        raise(VFFN_E_ARGUMENT, "slots: slot " + std::to_string(slots[size_t(t)]) + " at position " + std::to_string(t) +
                                   " is outside the pool [0, " + std::to_string(NB * BS) + ")");
    if (T * D == 0) return;
    kv_write_kernel<<<blocks_for(T * D, 256, 1u << 20), 256, 0, stream(dev)>>>(
        a.k_pool.ptr<float>(), a.v_pool.ptr<float>(), a.k.ptr<float>(), a.v.ptr<float>(), a.k.stride[0], a.v.stride[0],
        a.slots.ptr<int32_t>(), T, D);
    check_launch("kv_write");
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_paged_attention(int dev, const void* args) {
  return entry([&] {
    const PagedAttentionArgs& a = *static_cast<const PagedAttentionArgs*>(args);
    const int64_t B = a.q.shape[0], Sq = a.q.shape[1], H = a.heads, hd = a.q.shape[2] / H;
    const int64_t NB = a.k_pool.shape[0], BS = a.k_pool.shape[1], MB = a.block_table.shape[1];
    require(a.q.stride[2] == 1 && a.out.stride[2] == 1 && a.k_pool.contiguous() && a.v_pool.contiguous() &&
                a.block_table.contiguous() && a.lens.contiguous(),
            "paged_attention: rows with unit last stride, contiguous pools, block table and lengths");
    require(hd <= 32 * kPer, "paged_attention: head size above 256 is not supported on CUDA");
    const std::vector<int32_t> lens = to_host(dev, a.lens), table = to_host(dev, a.block_table);
    for (int64_t b = 0; b < B; b++) {
      const int64_t n = lens[size_t(b)];
      if (n < Sq || n > MB * BS)
        raise(VFFN_E_ARGUMENT, "lens: sequence " + std::to_string(b) + " has length " + std::to_string(n) + ", expected " +
                                   std::to_string(Sq) + ".." + std::to_string(MB * BS));
      for (int64_t j = 0; j < (n + BS - 1) / BS; j++) {
        const int32_t blk = table[size_t(b * MB + j)];
        if (blk < 0 || blk >= NB)
          raise(VFFN_E_ARGUMENT, "blockTable: block " + std::to_string(blk) + " of sequence " + std::to_string(b) +
                                     " is outside the pool [0, " + std::to_string(NB) + ")");
      }
    }
    const int64_t warps = B * H * Sq;
    if (warps == 0) return;
    paged_attention_kernel<<<blocks_for(warps * 32, 256, 1u << 30), 256, 0, stream(dev)>>>(
        a.q.ptr<float>(), a.q.stride[0], a.q.stride[1], a.out.ptr<float>(), a.out.stride[0], a.out.stride[1],
        a.k_pool.ptr<float>(), a.v_pool.ptr<float>(), a.block_table.ptr<int32_t>(), MB, a.lens.ptr<int32_t>(), B, Sq, H,
        int(hd), BS, a.scale);
    check_launch("paged_attention");
  });
}
