// VersatileFFN on CUDA: the pieces versatile.cu composes (routing and ordering kernels live in
// versatile_route.cu). T tokens, D width, I intermediate, N experts, K per token, E expert width,
// L loops. every count that decides how much work runs stays on the device: kernels are launched
// for upper bounds and read the live sizes from device memory.
#pragma once
#include "../core/ffn_args.h"
#include "ffn.cuh"

namespace vffn::cuda {

constexpr int kMaxBuckets = 64;  // experts N and loops L the ordering kernel handles

struct VSizes {
  int64_t T, D, I, N, K, L, E;
};

// logits [T, N + L]: router (x·W_routerᵀ) then loop head (x·W_depthᵀ), float32 dot products
void versatile_heads(int dev, const VSizes& s, const float* x, const View& router_w, const View& depth_w, float* logits);

// per token: top-K experts and their softmax weights, the loop choice (Gumbel noise when `noise`),
// loops, λ, and in training the router softmax over all N and the depth softmax p; expert_counts
// (all T·K assignments) accumulated into zeroed memory.
void versatile_route(int dev, const VSizes& s, const float* logits, bool train, bool noise, uint64_t seed, float tau,
                     int32_t* experts, float* weights, int32_t* loops, float* lambda, float* router_p, float* depth_p,
                     int32_t* expert_counts);

// aux[0] = α·N·Σ_e f_e·P_e (one block, tokens summed in order)
void versatile_balance(int dev, const VSizes& s, const float* router_p, const int32_t* expert_counts, float alpha,
                       float* aux);

// depth order: tokens by loops descending, stable. order[s] = t, pos[t] = s; m[j] (j = 0..L+1) =
// tokens with at least j loops, so loop j runs over sorted rows [0, m[j]).
void versatile_depth_order(int dev, const VSizes& s, const int32_t* loops, int32_t* order, int32_t* pos, int32_t* m);
// m and pos alone, from saved loops and order (backward)
void versatile_depth_counts(int dev, const VSizes& s, const int32_t* loops, const int32_t* order, int32_t* pos,
                            int32_t* m);

// the width plan: (token, slot) assignments a = t*K+k of active tokens (train: all; inference:
// loops < L) counting-sorted by expert, stable. assign[p] = a, start[N+1]; rows[p] = pos[t] (its
// row of the sorted norm), tok[p] = t, scale[p] = λ_t·w_a, slot[a] = p.
void versatile_width_plan(int dev, const VSizes& s, const int32_t* experts, const int32_t* loops, const float* lambda,
                          const float* weights, const int32_t* pos, bool train, int32_t* assign, int32_t* start,
                          int32_t* rows, int32_t* tok, float* scale, int32_t* slot);
// rows, tok, slot again from a saved plan (backward)
void versatile_width_rows(int dev, const VSizes& s, const int32_t* assign, const int32_t* pos, int32_t* rows,
                          int32_t* tok, int32_t* slot);

// dst[i] = src[idx[i]] for rows of width D (idx null: identity)
void gather_rows(int dev, int64_t rows, int64_t D, float* dst, const float* src, const int32_t* idx);

}  // namespace vffn::cuda
