// RMSNorm on CPU, forward and backward, computed in float32 with a float64 sum of squares.
// T rows, D width. n = x · rstd ⊙ w, rstd = 1/sqrt(mean(x²) + eps).
#include <cmath>

#include "../core/dtype.h"
#include "../core/error.h"
#include "ffn.h"
#include "pool.h"

namespace vffn::cpu {

std::vector<float> load_vector(const View& w) {
  std::vector<float> out(size_t(w.numel()));
  int64_t s = w.ndim ? w.stride[w.ndim - 1] : 1;
  for (size_t i = 0; i < out.size(); i++)
    out[i] = w.dtype == BF16 ? bf16_to_f32(w.ptr<uint16_t>()[int64_t(i) * s]) : w.ptr<float>()[int64_t(i) * s];
  return out;
}

void rmsnorm_rows(int64_t M, int64_t D, const float* x, int64_t ldx, const float* w, float eps, float* out,
                  int64_t ldo, float* rstd) {
  parallel_for(M, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      const float* xi = x + i * ldx;
      double ss = 0;
      for (int64_t j = 0; j < D; j++) ss += double(xi[j]) * xi[j];
      float r = float(1.0 / std::sqrt(ss / double(D) + double(eps)));
      if (rstd) rstd[i] = r;
      float* o = out + i * ldo;
      for (int64_t j = 0; j < D; j++) o[j] = xi[j] * r * w[j];
    }
  });
}

// n_j = x_j r w_j, dr/dx_j = -r³ x_j / D, so dx_j = r w_j dn_j - x_j r³/D · Σ_k dn_k w_k x_k
void rmsnorm_rows_backward(int64_t M, int64_t D, const float* dout, int64_t ldd, const float* x, int64_t ldx,
                           const float* w, const float* rstd, float* dx, int64_t lddx, float* dw) {
  // the weight gradient is a sum over rows: one thread walks the rows in order (deterministic)
  if (dw)
    for (int64_t i = 0; i < M; i++) {
      const float* g = dout + i * ldd;
      const float* xi = x + i * ldx;
      float r = rstd[i];
      for (int64_t j = 0; j < D; j++) dw[j] += g[j] * xi[j] * r;
    }
  parallel_for(M, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      const float* g = dout + i * ldd;
      const float* xi = x + i * ldx;
      double r = rstd[i], dot = 0;
      for (int64_t j = 0; j < D; j++) dot += double(g[j]) * w[j] * xi[j];
      float c = float(dot * r * r * r / double(D));
      float* o = dx + i * lddx;
      for (int64_t j = 0; j < D; j++) o[j] = float(r) * w[j] * g[j] - xi[j] * c;
    }
  });
}

void rmsnorm_forward(const RmsNormArgs& a) {
  int64_t T = a.x.rows(), D = a.x.cols();
  std::vector<float> w = load_vector(a.weight);
  rmsnorm_rows(T, D, a.x.ptr<float>(), a.x.ld(), w.data(), a.eps, a.out.ptr<float>(), a.out.ld(),
               a.rstd.data ? a.rstd.ptr<float>() : nullptr);
}

void rmsnorm_backward(const RmsNormBackwardArgs& a) {
  int64_t T = a.x.rows(), D = a.x.cols();
  std::vector<float> w = load_vector(a.weight);
  rmsnorm_rows_backward(T, D, a.dout.ptr<float>(), a.dout.ld(), a.x.ptr<float>(), a.x.ld(), w.data(),
                        a.rstd.ptr<float>(), a.dx.ptr<float>(), a.dx.ld(), a.dweight.ptr<float>());
}

}  // namespace vffn::cpu
