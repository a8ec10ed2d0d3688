// the dense SwiGLU FFN with its residual on CPU, forward and backward:
// y = x + W_out · (silu(W_gate · n(x)) ⊙ (W_up · n(x))). T rows, D width, I intermediate.
// the row helpers here also run each loop of VersatileFFN's depth path.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "ffn.h"
#include "gemm_kernels.h"
#include "pool.h"

namespace vffn::cpu {

namespace {
inline float sigmoid(float v) { return 1.f / (1.f + std::exp(-v)); }
}  // namespace

void swiglu_rows(int64_t M, int64_t n, const float* h, int64_t ldh, float* a, int64_t lda, bool parallel) {
  auto body = [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      const float* u = h + i * ldh;
      const float* g = u + n;
      float* o = a + i * lda;
      for (int64_t j = 0; j < n; j++) o[j] = g[j] * sigmoid(g[j]) * u[j];
    }
  };
  if (parallel) parallel_for(M, 8, body);
  else body(0, M, 0);
}

// silu'(g) = s·(1 + g·(1 − s)), s = sigmoid(g)
void swiglu_rows_backward(int64_t M, int64_t n, const float* da, int64_t ldda, const float* h, int64_t ldh,
                          float* dh, int64_t lddh, float* a, int64_t lda) {
  parallel_for(M, 8, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      const float* u = h + i * ldh;
      const float* g = u + n;
      const float* d = da + i * ldda;
      float* du = dh + i * lddh;
      float* dg = du + n;
      for (int64_t j = 0; j < n; j++) {
        float s = sigmoid(g[j]), silu = g[j] * s, dj = d[j];  // read first: a may alias da
        du[j] = dj * silu;
        dg[j] = dj * u[j] * s * (1.f + g[j] * (1.f - s));
        if (a) a[i * lda + j] = silu * u[j];
      }
    }
  });
}

void save_values(const float* src, const View& v, int64_t offset, int64_t n) {
  if (v.dtype != BF16) {
    std::memcpy(v.ptr<float>() + offset, src, size_t(n) * sizeof(float));
    return;
  }
  uint16_t* d = v.ptr<uint16_t>() + offset;
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) d[i] = f32_to_bf16(src[i]);
  });
}

void load_values(const View& v, int64_t offset, int64_t n, float* dst) {
  if (v.dtype != BF16) {
    std::memcpy(dst, v.ptr<float>() + offset, size_t(n) * sizeof(float));
    return;
  }
  const uint16_t* s = v.ptr<uint16_t>() + offset;
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) dst[i] = bf16_to_f32(s[i]);
  });
}

void round_as_saved(const View& v, float* p, int64_t n) {
  if (v.dtype != BF16) return;
  parallel_for(n, 1 << 14, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) p[i] = bf16_to_f32(f32_to_bf16(p[i]));
  });
}

void ffn_rows_forward(int64_t M, int64_t D, int64_t I, const float* n, float* x, const View& proj_w,
                      const View& out_w, float* h, float* a) {
  if (M == 0) return;
  gemm(M, 2 * I, D, 1.f, f32_mat(n, D), weight_mat(proj_w, 0, true), 0.f, h, 2 * I);
  swiglu_rows(M, I, h, 2 * I, a, I);
  gemm(M, D, I, 1.f, f32_mat(a, I), weight_mat(out_w, 0, true), 1.f, x, D);
}

void ffn_rows_backward(int64_t M, int64_t D, int64_t I, float* dx, const float* x, const float* rstd, const float* h,
                       const float* norm_w, const View& proj_w, const View& out_w, float* dnorm_w, float* dproj_w,
                       int64_t lddp, float* dout_w, int64_t lddo, const float* dn_extra) {
  if (M == 0) return;
  // `a` (the activation, for the ff_out gradient) overwrites da in place once dh is out
  std::vector<float> da(size_t(M * I)), dh(size_t(M * 2 * I)), n(size_t(M * D)), dn(size_t(M * D));
  float* a = da.data();
  gemm(M, I, D, 1.f, f32_mat(dx, D), weight_mat(out_w, 0, false), 0.f, da.data(), I);
  swiglu_rows_backward(M, I, da.data(), I, h, 2 * I, dh.data(), 2 * I, a, I);
  gemm(D, I, M, 1.f, f32_mat(dx, D, true), f32_mat(a, I), 1.f, dout_w, lddo);
  // the normalised input again, from the saved rstd (bit-identical to the forward's)
  parallel_for(M, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++)
      for (int64_t j = 0; j < D; j++) n[size_t(i * D + j)] = x[i * D + j] * rstd[i] * norm_w[j];
  });
  gemm(2 * I, D, M, 1.f, f32_mat(dh.data(), 2 * I, true), f32_mat(n.data(), D), 1.f, dproj_w, lddp);
  gemm(M, D, 2 * I, 1.f, f32_mat(dh.data(), 2 * I), weight_mat(proj_w, 0, false), 0.f, dn.data(), D);
  if (dn_extra)
    for (int64_t i = 0; i < M * D; i++) dn[size_t(i)] += dn_extra[i];
  rmsnorm_rows_backward(M, D, dn.data(), D, x, D, norm_w, rstd, dn.data(), D, dnorm_w);
  parallel_for(M, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b * D; i < e * D; i++) dx[i] += dn[size_t(i)];
  });
}

void ffn_rows_preact(int64_t M, int64_t D, int64_t I, const float* x, const float* rstd, const float* norm_w,
                     const View& proj_w, float* h) {
  if (M == 0) return;
  std::vector<float> n(size_t(M * D));
  parallel_for(M, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++)
      for (int64_t j = 0; j < D; j++) n[size_t(i * D + j)] = x[i * D + j] * rstd[i] * norm_w[j];
  });
  gemm(M, 2 * I, D, 1.f, f32_mat(n.data(), D), weight_mat(proj_w, 0, true), 0.f, h, 2 * I);
}

int64_t recompute_rows(int64_t rows, int64_t forward_rows) {
  return rows > kGemmSmallM ? rows : std::min(forward_rows, kGemmSmallM + 1);
}

void ffn_forward(const FfnForwardArgs& a) {
  int64_t T = a.x.rows(), D = a.x.cols(), I = a.out_w.cols();
  std::vector<float> w = load_vector(a.norm_w), n(size_t(T * D)), act(size_t(T * I)), hs, rs;
  // a bfloat16 h is computed in float32 scratch and rounded once
  bool direct = a.h.data && a.h.dtype == F32;
  float* h = direct ? a.h.ptr<float>() : (hs.resize(size_t(T * 2 * I)), hs.data());
  float* rstd = a.rstd.data ? a.rstd.ptr<float>() : (rs.resize(size_t(T)), rs.data());
  float* y = a.y.ptr<float>();
  rmsnorm_rows(T, D, a.x.ptr<float>(), D, w.data(), a.eps, n.data(), D, rstd);
  std::memcpy(y, a.x.ptr<float>(), size_t(T * D) * sizeof(float));
  ffn_rows_forward(T, D, I, n.data(), y, a.proj_w, a.out_w, h, act.data());
  if (a.h.data && !direct) save_values(h, a.h, 0, T * 2 * I);
}

void ffn_backward(const FfnBackwardArgs& a) {
  int64_t T = a.x.rows(), D = a.x.cols(), I = a.out_w.cols();
  std::vector<float> w = load_vector(a.norm_w);
  float* dx = a.dx.ptr<float>();
  std::memcpy(dx, a.dy.ptr<float>(), size_t(T * D) * sizeof(float));
  // recompute (data null): the pre-activations again, as the forward computed them, then rounded
  // as the forward would have saved them (bfloat16 under bf16-mixed), so the gradients are the same
  std::vector<float> hs;
  const float* h = a.h.data && a.h.dtype == F32 ? a.h.ptr<float>() : (hs.resize(size_t(T * 2 * I)), hs.data());
  if (!a.h.data) {
    ffn_rows_preact(T, D, I, a.x.ptr<float>(), a.rstd.ptr<float>(), w.data(), a.proj_w, hs.data());
    round_as_saved(a.h, hs.data(), T * 2 * I);
  } else if (a.h.dtype != F32) {
    load_values(a.h, 0, T * 2 * I, hs.data());
  }
  ffn_rows_backward(T, D, I, dx, a.x.ptr<float>(), a.rstd.ptr<float>(), h, w.data(), a.proj_w,
                    a.out_w, a.dnorm_w.ptr<float>(), a.dproj_w.ptr<float>(), a.dproj_w.ld(), a.dout_w.ptr<float>(),
                    a.dout_w.ld(), nullptr);
}

}  // namespace vffn::cpu
