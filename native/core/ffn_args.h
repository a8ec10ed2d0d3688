// argument blocks of the FFN layers (RMSNorm, dense SwiGLU FFN, VersatileFFN), shared by the CPU
// backend and the CUDA library (vffn_cuda_<op>(device, const XArgs*)). order: outputs, inputs,
// saved values, sizes; gradients prefixed d. every float tensor is float32 unless a field says
// "f32|bf16" (weights may be bfloat16; gradients are always float32). a View whose data is null
// is "not given" (saved values at inference). sizes: T tokens, D width, I intermediate,
// N experts, K experts per token, E expert width, L loops.
#pragma once
#include <cstdint>

#include "view.h"

namespace vffn {

// vffn_cuda_rmsnorm_forward: out = x * rstd ⊙ weight, rstd = 1/sqrt(mean(x²) + eps)
struct RmsNormArgs {
  View out;     // [T, D]
  View rstd;    // [T] saved for backward (may be null)
  View x;       // [T, D]
  View weight;  // [D] f32|bf16
  float eps;    // 1e-6
};

// vffn_cuda_rmsnorm_backward
struct RmsNormBackwardArgs {
  View dx;       // [T, D] written (not accumulated)
  View dweight;  // [D] accumulated (+=)
  View dout;     // [T, D]
  View x;        // [T, D]
  View weight;   // [D] f32|bf16
  View rstd;     // [T] from forward
};

// vffn_cuda_ffn_forward: y = x + W_out · (silu(W_gate·n(x)) ⊙ (W_up·n(x))), the dense baseline
struct FfnForwardArgs {
  View y;       // [T, D]
  View x;       // [T, D]
  View norm_w;  // [D] f32|bf16, ff_norm.weight
  View proj_w;  // [2I, D] f32|bf16, ff_proj.weight: rows [0,I) up, [I,2I) gate
  View out_w;   // [D, I] f32|bf16, ff_out.weight
  View rstd;    // [T] saved rstd of x (null at inference)
  View h;       // [T, 2I] f32|bf16 saved pre-activations, columns [0,I) up, [I,2I) gate (null at inference).
                // In training with recompute, data is null and the backward computes them again from x
                // and rstd; dtype still says how they would have been saved (bf16: rounded as saved)
  float eps;    // 1e-6
};

// vffn_cuda_ffn_backward: needs the forward's rstd and h
struct FfnBackwardArgs {
  View dx;       // [T, D] written
  View dnorm_w;  // [D] accumulated
  View dproj_w;  // [2I, D] accumulated
  View dout_w;   // [D, I] accumulated
  View dy;       // [T, D]
  View x;        // [T, D]
  View norm_w;   // [D] f32|bf16
  View proj_w;   // [2I, D] f32|bf16
  View out_w;    // [D, I] f32|bf16
  View rstd;     // [T] from forward
  View h;        // [T, 2I] f32|bf16 from forward, or data null: recomputed (CPU), rounded to dtype
  float eps;     // 1e-6
};

// what a VersatileFFN training forward keeps for backward. "sorted" rows are in depth order:
// sorted row s holds token order[s]; tokens sorted by loop count, descending, stable (ties keep
// token order), so the tokens still running loop j are the prefix of rows [0, m_j).
// "assignment" a = t*K + k is slot k of token t; "expert-sorted" lists assignments grouped by
// expert (counting sort, stable: within an expert by a ascending).
struct VersatileSaved {
  View order;         // [T] i32 sorted row -> token
  View depth_p;       // [T, L] softmax((z + g)/τ), token order (training)
  View xs;            // [L+1, T, D] loop values x^(0..L), sorted rows (x^(0) = x)
  View rstd;          // [L, T] rstd of each loop's input x^(j-1), sorted rows
  View h;             // [L, T, 2I] f32|bf16 each loop's pre-activations (up | gate), sorted rows; data null:
                      // recompute (the forward writes none, the backward computes them again from xs and
                      // rstd and rounds them to dtype, as the forward would have saved them)
  View assign;        // [T*K] i32 expert-sorted position -> assignment a
  View expert_start;  // [N+1] i32 first expert-sorted position of each expert
  View width_h;       // [T*K, 2E] f32|bf16 width pre-activations (up | gate) per expert-sorted position; data
                      // null with h (recompute, rounded to dtype the same way)
  View width_o;       // [T*K, D] FFN_e(x) (no residual, no routing weight) per expert-sorted position
  View x_width;       // [T, D] x_width = x + Σ_k w_k·FFN_{e_k}(x), token order
  View router_p;      // [T, N] softmax over all N router logits (balance loss), token order
};

// vffn_cuda_versatile_forward. inference (train = 0): token t runs c_t+1 loops (c = argmax of
// the loop logits), width path only where λ > 0; saved views may be null. training (train = 1):
// every loop and the width path run for every token; all saved views are given.
struct VersatileForwardArgs {
  View y;              // [T, D]
  View loops;          // [T] i32 loop count per token, c+1 with c = argmax_j (z_j + g_j) in float32, ties to
                       // the lower j; g = 0 at inference and without noise, else −logf(−logf(u)) (SPEC.md)
  View lambda;         // [T] λ = (L − loops)/L
  View experts;        // [T, K] i32 chosen experts, by descending logit (ties: lower index first)
  View weights;        // [T, K] routing weights, softmax over the chosen K logits
  View expert_counts;  // [N] i32 number of (token, slot) assignments per expert (all T tokens)
  View aux;            // [1] balance loss α·N·Σ_e f_e·P_e (training; written 0 when α = 0)
  View x;              // [T, D]
  View norm_w;         // [D] f32|bf16, ff_norm.weight
  View proj_w;         // [2I, D] f32|bf16, ff_proj.weight
  View out_w;          // [D, I] f32|bf16, ff_out.weight
  View router_w;       // [N, D] f32|bf16, expert_gate.weight
  View depth_w;        // [L, D] f32|bf16, depth_predictor.weight
  VersatileSaved saved;  // training only
  int64_t n_experts;     // N
  int64_t top_k;         // K
  int64_t max_depth;     // L
  int64_t expert_hidden; // E (expert e's columns start at expert_offset(e, N, I, E))
  float eps;             // 1e-6
  float tau;             // Gumbel temperature τ(step) (training)
  float balance_weight;  // α (training)
  int32_t train;         // 0 inference, 1 training
  int32_t noise;         // training: 1 Gumbel noise from Philox, 0 none (g = 0)
  uint64_t seed;         // Philox key for the Gumbel noise
};

// vffn_cuda_versatile_backward: gradients of y (and of the balance loss, scaled by aux_grad)
struct VersatileBackwardArgs {
  View dx;         // [T, D] written
  View dnorm_w;    // [D] accumulated
  View dproj_w;    // [2I, D] accumulated
  View dout_w;     // [D, I] accumulated
  View drouter_w;  // [N, D] accumulated
  View ddepth_w;   // [L, D] accumulated
  View dy;         // [T, D]
  View x;          // [T, D]
  View norm_w;     // [D] f32|bf16
  View proj_w;     // [2I, D] f32|bf16
  View out_w;      // [D, I] f32|bf16
  View router_w;   // [N, D] f32|bf16
  View depth_w;    // [L, D] f32|bf16
  View loops;      // [T] i32 from forward
  View lambda;     // [T] from forward
  View experts;    // [T, K] i32 from forward
  View weights;    // [T, K] from forward
  View expert_counts;  // [N] i32 from forward
  VersatileSaved saved;
  int64_t n_experts;
  int64_t top_k;
  int64_t max_depth;
  int64_t expert_hidden;
  float eps;
  float tau;             // the forward's τ
  float balance_weight;  // α
  float aux_grad;        // d(total loss)/d(aux), usually 1
};

// what a mixture-of-experts training forward keeps for backward (MoE FFN, SPEC.md). its experts
// are the width path's grouped GEMM over I = N·E columns, so expert e owns columns [e·E, (e+1)·E)
// (expert_offset(e, N, N·E, E) = e·E) and nothing is shared; rows are in token order.
struct MoeSaved {
  View rstd;          // [T] rstd of x
  View assign;        // [T*K] i32 expert-sorted position -> assignment a = t*K+k
  View expert_start;  // [N+1] i32 first expert-sorted position of each expert
  View width_h;       // [T*K, 2E] pre-activations (up | gate) per expert-sorted position; data null:
                      // recompute (the backward computes them again from x and rstd)
  View width_o;       // [T*K, D] FFN_e(x) (no residual, no routing weight) per expert-sorted position
  View router_p;      // [T, N] softmax over all N router logits (balance loss)
};

// vffn_cuda_moe_forward: y = x + Σ_k w_k·FFN_{e_k}(x), top-K routing as VersatileFFN's
struct MoeForwardArgs {
  View y;              // [T, D]
  View experts;        // [T, K] i32 chosen experts, by descending logit (ties: lower index first)
  View weights;        // [T, K] routing weights, softmax over the chosen K logits
  View expert_counts;  // [N] i32 number of (token, slot) assignments per expert
  View aux;            // [1] balance loss α·N·Σ_e f_e·P_e (training; written 0 when α = 0)
  View x;              // [T, D]
  View norm_w;         // [D] f32|bf16, ff_norm.weight
  View proj_w;         // [2I, D] f32|bf16, ff_proj.weight: rows [e·E, (e+1)·E) up, I + the same rows gate
  View out_w;          // [D, I] f32|bf16, ff_out.weight: columns [e·E, (e+1)·E) expert e's down projection
  View router_w;       // [N, D] f32|bf16, expert_gate.weight
  MoeSaved saved;      // training only
  int64_t n_experts;   // N
  int64_t top_k;       // K
  int64_t expert_hidden;  // E, with N·E = I
  float eps;              // 1e-6
  float balance_weight;   // α (training)
  int32_t train;          // 0 inference, 1 training
};

// vffn_cuda_moe_backward: gradients of y (and of the balance loss, scaled by aux_grad)
struct MoeBackwardArgs {
  View dx;         // [T, D] written
  View dnorm_w;    // [D] accumulated
  View dproj_w;    // [2I, D] accumulated
  View dout_w;     // [D, I] accumulated
  View drouter_w;  // [N, D] accumulated
  View dy;         // [T, D]
  View x;          // [T, D]
  View norm_w;     // [D] f32|bf16
  View proj_w;     // [2I, D] f32|bf16
  View out_w;      // [D, I] f32|bf16
  View router_w;   // [N, D] f32|bf16
  View experts;    // [T, K] i32 from forward
  View weights;    // [T, K] from forward
  View expert_counts;  // [N] i32 from forward
  MoeSaved saved;
  int64_t n_experts;
  int64_t top_k;
  int64_t expert_hidden;
  float eps;
  float balance_weight;  // α
  float aux_grad;        // d(total loss)/d(aux), usually 1
};

}  // namespace vffn
