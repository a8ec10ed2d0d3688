// CPU FFN layers: RMSNorm, the dense SwiGLU FFN with its residual, VersatileFFN. forward and
// backward of each in its own file (norm.cpp, ffn.cpp, versatile.cpp, versatile_width.cpp).
// the *_rows helpers work on M contiguous float32 rows and are shared by the layers.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/dtype.h"
#include "../core/ffn_args.h"
#include "gemm.h"

namespace vffn::cpu {

void rmsnorm_forward(const RmsNormArgs& a);
void rmsnorm_backward(const RmsNormBackwardArgs& a);
void ffn_forward(const FfnForwardArgs& a);
void ffn_backward(const FfnBackwardArgs& a);
void versatile_forward(const VersatileForwardArgs& a);
void versatile_backward(const VersatileBackwardArgs& a);
void moe_forward(const MoeForwardArgs& a);
void moe_backward(const MoeBackwardArgs& a);

// a weight matrix (or a slice of it starting `offset` elements in) as a GEMM operand
inline Mat weight_mat(const View& w, int64_t offset, bool trans) {
  return Mat{static_cast<const char*>(w.data) + offset * dtype_size(w.dtype), w.dtype, w.stride[0], trans, nullptr};
}
inline Mat f32_mat(const float* p, int64_t ld, bool trans = false, const int32_t* rows = nullptr) {
  return Mat{p, 0, ld, trans, rows};
}
std::vector<float> load_vector(const View& w);  // [n] f32|bf16 -> float
// saved pre-activations may be bfloat16 (bf16-mixed training): n values at element `offset` of v,
// rounded once when saved, widened when backward reads them
void save_values(const float* src, const View& v, int64_t offset, int64_t n);
void load_values(const View& v, int64_t offset, int64_t n, float* dst);
// recomputed pre-activations as save_values then load_values would give them back: rounded to
// bfloat16 in place when v (the saved value's view, data null under recompute) says bfloat16
void round_as_saved(const View& v, float* p, int64_t n);

// out = x * rstd ⊙ w over M rows of width D (rstd may be null: not kept)
void rmsnorm_rows(int64_t M, int64_t D, const float* x, int64_t ldx, const float* w, float eps, float* out,
                  int64_t ldo, float* rstd);
// dx = d(out)/dx^T · dout (written; may alias dout), dw += Σ_rows dout ⊙ x·rstd (serial over rows)
void rmsnorm_rows_backward(int64_t M, int64_t D, const float* dout, int64_t ldd, const float* x, int64_t ldx,
                           const float* w, const float* rstd, float* dx, int64_t lddx, float* dw);

// a = silu(gate) ⊙ up, h rows hold [up (n) | gate (n)] with leading dimension ldh
void swiglu_rows(int64_t M, int64_t n, const float* h, int64_t ldh, float* a, int64_t lda, bool parallel = true);
// dh = [da ⊙ silu(g) | da ⊙ u ⊙ silu'(g)], also a (for the weight gradient) when a != null; a may be da
void swiglu_rows_backward(int64_t M, int64_t n, const float* da, int64_t ldda, const float* h, int64_t ldh,
                          float* dh, int64_t lddh, float* a, int64_t lda);

// x[0:M] += W_out · swiglu(W_proj · n) over M contiguous rows (x and n leading dim D); h [M, 2I]
// receives the pre-activations (saved or scratch); a [M, I] is scratch
void ffn_rows_forward(int64_t M, int64_t D, int64_t I, const float* n, float* x, const View& proj_w,
                      const View& out_w, float* h, float* a);
// h [M, 2I] = W_proj · n(x) over M rows from the saved rstd: the forward's pre-activations, bit for bit
// when the GEMM takes the same path (see recompute_rows)
void ffn_rows_preact(int64_t M, int64_t D, int64_t I, const float* x, const float* rstd, const float* norm_w,
                     const View& proj_w, float* h);
// how many leading rows to recompute when `rows` of a GEMM the forward ran over `forward_rows`
// rows are needed: a GEMM's rows come out the same whatever its M, except that M up to
// kGemmSmallM takes the small-M path (another summation order), so small counts are widened
int64_t recompute_rows(int64_t rows, int64_t forward_rows);
// backward of x + FFN(x) over M rows: dx[0:M] (in place) = dx + J^T dx; dn_extra [M, D] (or null)
// is added to the norm's input gradient (the width path shares the first loop's norm).
void ffn_rows_backward(int64_t M, int64_t D, int64_t I, float* dx, const float* x, const float* rstd, const float* h,
                       const float* norm_w, const View& proj_w, const View& out_w, float* dnorm_w, float* dproj_w,
                       int64_t lddp, float* dout_w, int64_t lddo, const float* dn_extra);

}  // namespace vffn::cpu

namespace vffn::cpu {

// VersatileFFN's width path (versatile_width.cpp). P (token, slot) assignments grouped by expert:
// position p holds assignment assign[p] = t*K+k, experts own positions [start[e], start[e+1]),
// rows[p] is the row of n (the shared norm) that position p reads.
// the router shared by VersatileFFN and MoEFFN. route_topk, tokens [t0, t1): top-K of each row
// of r [T, N] (ties to the lower index), the softmax over the chosen K into weights, and with
// router_p the softmax over all N (the balance loss's P). count_experts: each expert's
// assignments into counts [N], and the balance loss α·N·Σ_e f_e·P_e (0 without router_p or α).
// router_backward: d(router logits) [T, N] from the gradient of each chosen weight, dw [T, K],
// plus the balance loss's through P.
void route_topk(int64_t t0, int64_t t1, int64_t N, int64_t K, const float* r, int32_t* experts, float* weights,
                float* router_p);
float count_experts(int64_t T, int64_t N, int64_t K, const int32_t* experts, int32_t* counts, const float* router_p,
                    float balance_weight);
std::vector<float> router_backward(int64_t T, int64_t N, int64_t K, const int32_t* experts, const float* weights,
                                   const float* dw, const int32_t* counts, const float* router_p, float balance_weight,
                                   float aux_grad);

struct WidthPlan {
  int64_t N, K, D, I, E;
  std::vector<int32_t> assign, start, rows;
  int64_t positions() const { return int64_t(assign.size()); }
};
// counting sort of the assignments of tokens with active[t] != 0 by expert (stable in t*K+k);
// row_of[t] maps a token to its row of n
WidthPlan width_plan(int64_t T, int64_t N, int64_t K, int64_t D, int64_t I, int64_t E, const int32_t* experts,
                     const uint8_t* active, const int32_t* row_of);
// o[p] = FFN_e(n[rows[p]]) (no residual, no weight) for every position, as one grouped GEMM;
// h [P, 2E] receives the pre-activations when not null. o null: the pre-activations only (h
// given), in the same tasks, so a recompute reproduces the forward's bits
void width_forward(const WidthPlan& w, const float* n, const View& proj_w, const View& out_w, float* h, float* o);
// do[p] = λ_t·w_a·dy[t]; accumulates dproj_w / dout_w slices and dn[rows[p]], writes dw[a] = λ_t·⟨dy_t, o[p]⟩
// (zero for tokens with λ = 0, which are skipped)
void width_backward(const WidthPlan& w, const float* dy, const float* lambda, const float* weights, const float* n,
                    const float* h, const float* o, const View& proj_w, const View& out_w, float* dproj_w, int64_t lddp,
                    float* dout_w, int64_t lddo, float* dn, float* dw);

}  // namespace vffn::cpu
