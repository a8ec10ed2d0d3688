// causal multi-head attention on CUDA: one warp per query row (forward, dq) or per key row (dk,
// dv), an online softmax over the visible keys, never an S×S matrix; backward recomputes the
// probabilities from the saved log-sum-exp. plain and correct first: a tiled tensor-core version
// (flash-style) is the step after this one. B batch, Sq queries, Sk keys, H heads, hd ≤ 256.
#include <cmath>

#include "../core/lm_args.h"
#include "common.cuh"

namespace vffn::cuda {
namespace {

constexpr int kPer = 8;  // head elements per lane: hd <= 32 * kPer

// a head's rows inside a [B, S, H*hd] view with unit last stride
struct Heads {
  const float* p;
  int64_t sb, ss;
  __device__ const float* row(int64_t b, int64_t s, int64_t h, int64_t hd) const { return p + b * sb + s * ss + h * hd; }
};
Heads heads_of(const View& v) { return Heads{v.ptr<float>(), v.stride[0], v.stride[1]}; }

struct Lse {
  float* p;
  int64_t sb, sh, ss;
  __device__ float& at(int64_t b, int64_t h, int64_t s) const { return p[b * sb + h * sh + s * ss]; }
};

__device__ __forceinline__ void load_row(float (&r)[kPer], const float* p, int hd, float scale = 1.f) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int u = 0; u < kPer; u++) r[u] = lane + 32 * u < hd ? p[lane + 32 * u] * scale : 0.f;
}
__device__ __forceinline__ float dot_row(const float (&r)[kPer], const float* p, int hd) {
  const int lane = threadIdx.x & 31;
  float s = 0.f;
#pragma unroll
  for (int u = 0; u < kPer; u++)
    if (lane + 32 * u < hd) s += r[u] * p[lane + 32 * u];
  return warp_sum(s);
}
__device__ __forceinline__ void store_row(float* p, const float (&r)[kPer], int hd, float scale) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int u = 0; u < kPer; u++)
    if (lane + 32 * u < hd) p[lane + 32 * u] = r[u] * scale;
}

__global__ void attention_forward_kernel(Heads Q, Heads K, Heads Vv, float* out, int64_t ob, int64_t os, Lse lse,
                                         int64_t B, int64_t Sq, int64_t Sk, int64_t H, int hd, int64_t q_offset,
                                         float scale) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (w >= B * H * Sq) return;
  const int64_t i = w % Sq, h = (w / Sq) % H, b = w / (Sq * H);
  const int lane = threadIdx.x & 31;
  float q[kPer], acc[kPer];
  load_row(q, Q.row(b, i, h, hd), hd, scale);
#pragma unroll
  for (int u = 0; u < kPer; u++) acc[u] = 0.f;
  float m = -INFINITY, l = 0.f;
  const int64_t last = min(Sk - 1, q_offset + i);
  for (int64_t j = 0; j <= last; j++) {
    const float s = dot_row(q, K.row(b, j, h, hd), hd);
    const float mn = fmaxf(m, s), alpha = __expf(m - mn), p = __expf(s - mn);
    l = l * alpha + p;
    m = mn;
    const float* v = Vv.row(b, j, h, hd);
#pragma unroll
    for (int u = 0; u < kPer; u++)
      if (lane + 32 * u < hd) acc[u] = acc[u] * alpha + p * v[lane + 32 * u];
  }
  store_row(out + b * ob + i * os + h * hd, acc, hd, 1.f / l);
  if (lane == 0) lse.at(b, h, i) = m + logf(l);
}

// delta_i = <dO_i, O_i>, the softmax backward's row term
__global__ void attention_delta_kernel(Heads dO, Heads O, float* delta, int64_t B, int64_t Sq, int64_t H, int hd) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (w >= B * H * Sq) return;
  const int64_t i = w % Sq, h = (w / Sq) % H, b = w / (Sq * H);
  float g[kPer];
  load_row(g, dO.row(b, i, h, hd), hd);
  const float d = dot_row(g, O.row(b, i, h, hd), hd);
  if ((threadIdx.x & 31) == 0) delta[w] = d;
}

// dq_i = scale · Σ_j p_ij (dO_i·v_j − delta_i) k_j over the keys query i sees
__global__ void attention_dq_kernel(Heads Q, Heads K, Heads Vv, Heads dO, Lse lse, const float* delta, float* dq,
                                    int64_t qb, int64_t qs, int64_t B, int64_t Sq, int64_t Sk, int64_t H, int hd,
                                    int64_t q_offset, float scale) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (w >= B * H * Sq) return;
  const int64_t i = w % Sq, h = (w / Sq) % H, b = w / (Sq * H);
  const int lane = threadIdx.x & 31;
  float q[kPer], g[kPer], acc[kPer];
  load_row(q, Q.row(b, i, h, hd), hd, scale);
  load_row(g, dO.row(b, i, h, hd), hd);
#pragma unroll
  for (int u = 0; u < kPer; u++) acc[u] = 0.f;
  const float L = lse.at(b, h, i), d = delta[w];
  const int64_t last = min(Sk - 1, q_offset + i);
  for (int64_t j = 0; j <= last; j++) {
    const float* k = K.row(b, j, h, hd);
    const float p = __expf(dot_row(q, k, hd) - L);
    const float ds = p * (dot_row(g, Vv.row(b, j, h, hd), hd) - d);
#pragma unroll
    for (int u = 0; u < kPer; u++)
      if (lane + 32 * u < hd) acc[u] += ds * k[lane + 32 * u];
  }
  store_row(dq + b * qb + i * qs + h * hd, acc, hd, scale);
}

// dv_j = Σ_i p_ij dO_i, dk_j = scale · Σ_i p_ij (dO_i·v_j − delta_i) q_i over the queries that see key j
__global__ void attention_dkv_kernel(Heads Q, Heads K, Heads Vv, Heads dO, Lse lse, const float* delta, float* dk,
                                     float* dv, int64_t kb, int64_t ks, int64_t vb, int64_t vs, int64_t B, int64_t Sq,
                                     int64_t Sk, int64_t H, int hd, int64_t q_offset, float scale) {
  const int64_t w = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (w >= B * H * Sk) return;
  const int64_t j = w % Sk, h = (w / Sk) % H, b = w / (Sk * H);
  const int lane = threadIdx.x & 31;
  float k[kPer], v[kPer], ak[kPer], av[kPer];
  load_row(k, K.row(b, j, h, hd), hd, scale);
  load_row(v, Vv.row(b, j, h, hd), hd);
#pragma unroll
  for (int u = 0; u < kPer; u++) ak[u] = av[u] = 0.f;
  for (int64_t i = max(int64_t(0), j - q_offset); i < Sq; i++) {
    const float* q = Q.row(b, i, h, hd);
    const float* g = dO.row(b, i, h, hd);
    const int64_t row = (b * H + h) * Sq + i;
    const float p = __expf(dot_row(k, q, hd) - lse.at(b, h, i));
    const float ds = p * (dot_row(v, g, hd) - delta[row]);
#pragma unroll
    for (int u = 0; u < kPer; u++)
      if (lane + 32 * u < hd) {
        av[u] += p * g[lane + 32 * u];
        ak[u] += ds * q[lane + 32 * u];
      }
  }
  store_row(dk + b * kb + j * ks + h * hd, ak, hd, scale);
  store_row(dv + b * vb + j * vs + h * hd, av, hd, 1.f);
}

void check_qkv(const View& q, const View& k, const View& v, int64_t heads) {
  for (const View* x : {&q, &k, &v})
    require(x->dtype == F32 && x->ndim == 3 && x->stride[2] == 1, "attention: q, k, v must be float32 [B, S, H*hd] with unit last stride");
  require(heads > 0 && q.shape[2] % heads == 0 && q.shape[2] / heads <= 32 * kPer,
          "attention: heads must divide the width, head size at most 256");
  require(k.shape[0] == q.shape[0] && v.shape[0] == q.shape[0] && k.shape[1] == v.shape[1] &&
              k.shape[2] == q.shape[2] && v.shape[2] == q.shape[2],
          "attention: q, k, v shapes disagree");
}

Lse lse_of(const View& l) { return Lse{l.ptr<float>(), l.stride[0], l.stride[1], l.stride[2]}; }

}  // namespace
}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

VFFN_CUDA_EXPORT int vffn_cuda_attention_forward(int dev, const void* args) {
  return entry([&] {
    const AttentionForwardArgs& a = *static_cast<const AttentionForwardArgs*>(args);
    check_qkv(a.q, a.k, a.v, a.heads);
    require(a.out.dtype == F32 && a.out.ndim == 3 && a.out.stride[2] == 1 && a.lse.dtype == F32 && a.lse.ndim == 3,
            "attention: out [B, Sq, H*hd] and lse [B, H, Sq] must be float32");
    const int64_t B = a.q.shape[0], Sq = a.q.shape[1], Sk = a.k.shape[1], H = a.heads;
    const int hd = int(a.q.shape[2] / H);
    cudaStream_t st = stream(dev);
    const int64_t warps = B * H * Sq;
    if (warps == 0) return;
    attention_forward_kernel<<<blocks_for(warps * 32, 256, 1u << 30), 256, 0, st>>>(
        heads_of(a.q), heads_of(a.k), heads_of(a.v), a.out.ptr<float>(), a.out.stride[0], a.out.stride[1], lse_of(a.lse),
        B, Sq, Sk, H, hd, a.q_offset, a.scale);
    check_launch("attention_forward");
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_attention_backward(int dev, const void* args) {
  return entry([&] {
    const AttentionBackwardArgs& a = *static_cast<const AttentionBackwardArgs*>(args);
    check_qkv(a.q, a.k, a.v, a.heads);
    for (const View* x : {&a.dq, &a.dk, &a.dv, &a.dout, &a.out})
      require(x->dtype == F32 && x->ndim == 3 && x->stride[2] == 1, "attention_backward: gradients and out must be float32 [B, S, H*hd]");
    const int64_t B = a.q.shape[0], Sq = a.q.shape[1], Sk = a.k.shape[1], H = a.heads;
    const int hd = int(a.q.shape[2] / H);
    cudaStream_t st = stream(dev);
    if (B * H * Sk == 0) return;
    Scratch delta(dev, size_t(B * H * (Sq > 0 ? Sq : 1)) * 4);
    const unsigned gq = blocks_for(B * H * Sq * 32, 256, 1u << 30), gk = blocks_for(B * H * Sk * 32, 256, 1u << 30);
    if (Sq) {
      attention_delta_kernel<<<gq, 256, 0, st>>>(heads_of(a.dout), heads_of(a.out), delta.as<float>(), B, Sq, H, hd);
      attention_dq_kernel<<<gq, 256, 0, st>>>(heads_of(a.q), heads_of(a.k), heads_of(a.v), heads_of(a.dout), lse_of(a.lse),
                                             delta.as<float>(), a.dq.ptr<float>(), a.dq.stride[0], a.dq.stride[1], B, Sq,
                                             Sk, H, hd, a.q_offset, a.scale);
    }
    attention_dkv_kernel<<<gk, 256, 0, st>>>(heads_of(a.q), heads_of(a.k), heads_of(a.v), heads_of(a.dout), lse_of(a.lse),
                                            delta.as<float>(), a.dk.ptr<float>(), a.dv.ptr<float>(), a.dk.stride[0],
                                            a.dk.stride[1], a.dv.stride[0], a.dv.stride[1], B, Sq, Sk, H, hd,
                                            a.q_offset, a.scale);
    check_launch("attention_backward");
  });
}
