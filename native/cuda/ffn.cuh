// row helpers of the FFN layers on CUDA, shared by the dense FFN and VersatileFFN's depth path.
// M rows (an upper bound; with m_limit the live rows come from device memory), D width,
// I intermediate. every float activation is float32, weights float32 or bfloat16.
#pragma once
#include "common.cuh"

namespace vffn::cuda {

// out = x · rstd ⊙ w over rows; rstd written when not null (or read, when use_saved)
void rmsnorm_rows(int dev, int64_t M, int64_t D, const float* x, int64_t ldx, const View& w, float eps, float* out,
                  int64_t ldo, float* rstd, bool use_saved, const int* m_limit);
// dx (= or +=) the norm's input gradient of dn; dw += Σ_rows dn ⊙ x·rstd (when dw not null)
void rmsnorm_rows_backward(int dev, int64_t M, int64_t D, const float* dn, int64_t ldd, const float* x, int64_t ldx,
                           const View& w, const float* rstd, float* dx, int64_t lddx, bool accumulate, float* dw,
                           const int* m_limit);
// dh = [da ⊙ silu(g) | da ⊙ u ⊙ silu'(g)] and a = silu(g) ⊙ u from h = [u | g] ([M, 2n], [M, n])
void swiglu_rows_backward(int dev, int64_t M, int64_t n, const float* da, const float* h, float* dh, float* a,
                          const int* m_limit);

// x[0:M] += W_out · swiglu(W_proj · n[0:M]); h [M, 2I] receives the pre-activations when not null;
// act [M, I] is scratch. n, x, h, act contiguous.
void ffn_rows_forward(int dev, int64_t M, int64_t D, int64_t I, const float* n, float* x, const View& proj_w,
                      const View& out_w, float* h, float* act, const int* m_limit);
// backward of x + FFN(x) over rows: dx[0:M] += J^T dx (in place), weight gradients accumulated.
// dn_extra [M, D] (or null) joins the norm's output gradient (the width path shares loop 1's norm).
void ffn_rows_backward(int dev, int64_t M, int64_t D, int64_t I, float* dx, const float* x, const float* rstd,
                       const float* h, const View& norm_w, const View& proj_w, const View& out_w, float* dnorm_w,
                       float* dproj_w, int64_t lddp, float* dout_w, int64_t lddo, const float* dn_extra,
                       const int* m_limit);

// a float32 matrix as a View (for GemmSpec operands)
inline View f32_view(const float* p, int64_t rows, int64_t cols, int64_t ld) {
  View v;
  v.data = const_cast<float*>(p);
  v.dtype = F32;
  v.ndim = 2;
  v.shape[0] = rows;
  v.shape[1] = cols;
  v.stride[0] = ld;
  v.stride[1] = 1;
  return v;
}

}  // namespace vffn::cuda
