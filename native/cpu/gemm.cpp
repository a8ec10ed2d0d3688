// straightforward blocked GEMM; the packed micro-kernel replaces its inner loops.
#include "gemm.h"

#include <algorithm>
#include <vector>

#include "../core/dtype.h"
#include "pool.h"

namespace vffn::cpu {

static inline float load(const Mat& m, int64_t r, int64_t c) {
  // r, c index the operand op(M)
  int64_t sr = m.trans ? c : (m.rows ? m.rows[r] : r);
  int64_t sc = m.trans ? r : c;
  if (m.dtype == BF16) return bf16_to_f32(static_cast<const uint16_t*>(m.data)[sr * m.ld + sc]);
  return static_cast<const float*>(m.data)[sr * m.ld + sc];
}

static void gemm_rows(int64_t i0, int64_t i1, int64_t N, int64_t K, float alpha, const Mat& A, const Mat& B,
                      float beta, float* C, int64_t ldc) {
  std::vector<float> acc(static_cast<size_t>(N));
  for (int64_t i = i0; i < i1; i++) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t k = 0; k < K; k++) {
      float a = load(A, i, k);
      for (int64_t j = 0; j < N; j++) acc[size_t(j)] += a * load(B, k, j);
    }
    float* c = C + i * ldc;
    for (int64_t j = 0; j < N; j++) c[j] = alpha * acc[size_t(j)] + (beta == 0.f ? 0.f : beta * c[j]);
  }
}

void gemm(int64_t M, int64_t N, int64_t K, float alpha, const Mat& A, const Mat& B, float beta, float* C,
          int64_t ldc, bool parallel) {
  if (M <= 0 || N <= 0) return;
  if (!parallel) return gemm_rows(0, M, N, K, alpha, A, B, beta, C, ldc);
  parallel_for(M, 8, [&](int64_t b, int64_t e, int) { gemm_rows(b, e, N, K, alpha, A, B, beta, C, ldc); });
}

const char* gemm_kernel_name() { return "portable"; }

}  // namespace vffn::cpu
