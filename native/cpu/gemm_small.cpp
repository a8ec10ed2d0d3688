// the portable small-M GEMM (VFFN_GEMM_KERNEL=portable, or machines without AVX2 + FMA): the same
// loops as gemm_small_avx2.cpp in plain C++. B^T: 8 lanes over k (bfloat16: over pairs of k),
// lanes added pairwise, then the k tail; plain B: k-ordered sums per block of 64, added up. each element's arithmetic is fixed by K.
#include <algorithm>

#include "../core/dtype.h"
#include "gemm_kernels.h"

namespace vffn::cpu {

namespace {

inline float widen(float x) { return x; }
inline float widen(uint16_t x) { return bf16_to_f32(x); }

inline void store_c(float* c, float acc, float alpha, float beta) {
  const float r = alpha * acc;
  *c = beta == 0.f ? r : beta * *c + r;
}

template <typename T>
void small_trans(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a, const Mat& B,
                 float beta, float* C, int64_t ldc) {
  // float32: lane q sums element q of each 8; bfloat16: lane q the pair (2q, 2q + 1) of each 16
  constexpr int64_t S = sizeof(T) == 2 ? 16 : 8;
  const int64_t KS = K / S * S;
  for (int64_t j = n0; j < n1; j++) {
    const T* b = static_cast<const T*>(B.data) + j * B.ld;
    for (int64_t i = 0; i < M; i++) {
      const float* x = a[i];
      float l[8] = {};
      for (int64_t k0 = 0; k0 < KS; k0 += 512) {  // blocks summed from zero, then added (short chains)
        float part[8] = {}, odd[8] = {};  // bfloat16: the pairs' even and odd products, apart
        for (int64_t p = k0; p < std::min(KS, k0 + 512); p += S)
          for (int q = 0; q < 8; q++) {
            if constexpr (S == 8) {
              part[q] += x[p + q] * widen(b[p + q]);
            } else {
              part[q] += x[p + 2 * q] * widen(b[p + 2 * q]);
              odd[q] += x[p + 2 * q + 1] * widen(b[p + 2 * q + 1]);
            }
          }
        for (int q = 0; q < 8; q++) l[q] += S == 8 ? part[q] : part[q] + odd[q];
      }
      float v = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
      for (int64_t p = KS; p < K; p++) v += x[p] * widen(b[p]);
      store_c(C + i * ldc + j, v, alpha, beta);
    }
  }
}

template <typename T>
void small_plain(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a, const Mat& B,
                 float beta, float* C, int64_t ldc) {
  constexpr int64_t kW = 64;  // columns summed at once, in a stack buffer
  const T* d = static_cast<const T*>(B.data);
  constexpr int64_t kKB = 64;  // k blocks summed from zero, then added to the total (short chains)
  float acc[kGemmSmallM][kW], part[kGemmSmallM][kW];
  for (int64_t j0 = n0; j0 < n1; j0 += kW) {
    const int64_t w = std::min(kW, n1 - j0);
    for (int64_t i = 0; i < M; i++) std::fill(acc[i], acc[i] + w, 0.f);
    for (int64_t k0 = 0; k0 < K; k0 += kKB) {
      for (int64_t i = 0; i < M; i++) std::fill(part[i], part[i] + w, 0.f);
      for (int64_t p = k0; p < std::min(K, k0 + kKB); p++) {
        const T* br = d + (B.rows ? int64_t(B.rows[p]) : p) * B.ld + j0;
        for (int64_t i = 0; i < M; i++) {
          const float x = a[i][p];
          for (int64_t j = 0; j < w; j++) part[i][j] += x * widen(br[j]);
        }
      }
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < w; j++) acc[i][j] += part[i][j];
    }
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < w; j++) store_c(C + i * ldc + j0 + j, acc[i][j], alpha, beta);
  }
}

}  // namespace

void gemm_small_portable(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a,
                         const Mat& B, float beta, float* C, int64_t ldc) {
  if (B.trans)
    return B.dtype == BF16 ? small_trans<uint16_t>(M, n0, n1, K, alpha, a, B, beta, C, ldc)
                           : small_trans<float>(M, n0, n1, K, alpha, a, B, beta, C, ldc);
  B.dtype == BF16 ? small_plain<uint16_t>(M, n0, n1, K, alpha, a, B, beta, C, ldc)
                  : small_plain<float>(M, n0, n1, K, alpha, a, B, beta, C, ldc);
}

}  // namespace vffn::cpu
