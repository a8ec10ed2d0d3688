// row helpers of the FFN layers on CUDA, shared by the dense FFN and VersatileFFN's depth path.
// M rows (an upper bound; with m_limit the live rows come from device memory), D width,
// I intermediate. every float activation is float32, weights float32 or bfloat16.
#pragma once
#include "common.cuh"

namespace vffn::cuda {

// out = x · rstd ⊙ w over rows, stored as out_dtype; rstd written when not null (or read, when
// use_saved)
void rmsnorm_rows(int dev, int64_t M, int64_t D, const float* x, int64_t ldx, const View& w, float eps, void* out,
                  int out_dtype, int64_t ldo, float* rstd, bool use_saved, const int* m_limit);
inline void rmsnorm_rows(int dev, int64_t M, int64_t D, const float* x, int64_t ldx, const View& w, float eps,
                         float* out, int64_t ldo, float* rstd, bool use_saved, const int* m_limit) {
  rmsnorm_rows(dev, M, D, x, ldx, w, eps, out, F32, ldo, rstd, use_saved, m_limit);
}
// dx (= or +=) the norm's input gradient of dn; dw += Σ_rows dn ⊙ x·rstd (when dw not null)
void rmsnorm_rows_backward(int dev, int64_t M, int64_t D, const float* dn, int64_t ldd, const float* x, int64_t ldx,
                           const View& w, const float* rstd, float* dx, int64_t lddx, bool accumulate, float* dw,
                           const int* m_limit);
// dh = [da ⊙ silu(g) | da ⊙ u ⊙ silu'(g)] and a = silu(g) ⊙ u from h = [u | g] ([M, 2n], [M, n])
void swiglu_rows_backward(int dev, int64_t M, int64_t n, const float* da, const float* h, float* dh, float* a,
                          const int* m_limit);

// the dtype a forward keeps its GEMM inputs in (the norm's output, the SwiGLU activation): bf16
// when both FFN weights are bf16, so every forward GEMM has two bf16 operands (bf16 tensor
// cores, cp.async tiles); rounding there is the rounding bf16 math does on load anyway
inline int act_dtype(const View& proj_w, const View& out_w) {
  return proj_w.dtype == BF16 && out_w.dtype == BF16 ? BF16 : F32;
}

// x[0:M] += W_out · swiglu(W_proj · n[0:M]); n and act ([M, I] scratch) in dtype adt; h [M, 2I]
// (float32) receives the pre-activations when not null. n, x, h, act contiguous.
void ffn_rows_forward(int dev, int64_t M, int64_t D, int64_t I, const void* n, int adt, float* x, const View& proj_w,
                      const View& out_w, float* h, void* act, const int* m_limit);
// backward of x + FFN(x) over rows: dx[0:M] += J^T dx (in place), weight gradients accumulated.
// dn_extra [M, D] (or null) joins the norm's output gradient (the width path shares loop 1's norm).
void ffn_rows_backward(int dev, int64_t M, int64_t D, int64_t I, float* dx, const float* x, const float* rstd,
                       const float* h, const View& norm_w, const View& proj_w, const View& out_w, float* dnorm_w,
                       float* dproj_w, int64_t lddp, float* dout_w, int64_t lddo, const float* dn_extra,
                       const int* m_limit);

// saved pre-activations may be bfloat16 (bf16-mixed training): n float32 values rounded into v at
// element `offset` (save), or widened from there (load); a float32 v is copied
void save_values(int dev, const float* src, const View& v, int64_t offset, int64_t n);
void load_values(int dev, const View& v, int64_t offset, int64_t n, float* dst);

// a matrix as a View (for GemmSpec operands)
inline View mat_view(const void* p, int dtype, int64_t rows, int64_t cols, int64_t ld) {
  View v;
  v.data = const_cast<void*>(p);
  v.dtype = dtype;
  v.ndim = 2;
  v.shape[0] = rows;
  v.shape[1] = cols;
  v.stride[0] = ld;
  v.stride[1] = 1;
  return v;
}

inline View f32_view(const float* p, int64_t rows, int64_t cols, int64_t ld) { return mat_view(p, F32, rows, cols, ld); }

}  // namespace vffn::cuda
