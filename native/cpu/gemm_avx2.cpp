// AVX2 + FMA GEMM pieces: a 6x16 micro-kernel (12 ymm accumulators, 2 B loads and 6 broadcasts
// per k) and the vectorised packing of gemm_pack_x86.h for 6-row and 16-column panels.
// this file is compiled with -mavx2 -mfma and only called after a run-time CPU check.
#include "gemm_kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include "gemm_pack_x86.h"

namespace vffn::cpu {

namespace {

constexpr int kMR = 6, kNR = 16;

void micro_6x16(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int i = 0; i < kMR; i++) _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 x = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(x, b0, c00), c01 = _mm256_fmadd_ps(x, b1, c01);
    x = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(x, b0, c10), c11 = _mm256_fmadd_ps(x, b1, c11);
    x = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(x, b0, c20), c21 = _mm256_fmadd_ps(x, b1, c21);
    x = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(x, b0, c30), c31 = _mm256_fmadd_ps(x, b1, c31);
    x = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(x, b0, c40), c41 = _mm256_fmadd_ps(x, b1, c41);
    x = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(x, b0, c50), c51 = _mm256_fmadd_ps(x, b1, c51);
    a += kMR;
    b += kNR;
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  auto put = [&](float* p, __m256 acc) {
    __m256 r = _mm256_mul_ps(va, acc);
    if (beta != 0.f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p), r);
    _mm256_storeu_ps(p, r);
  };
  put(c, c00), put(c + 8, c01), c += ldc;
  put(c, c10), put(c + 8, c11), c += ldc;
  put(c, c20), put(c + 8, c21), c += ldc;
  put(c, c30), put(c + 8, c31), c += ldc;
  put(c, c40), put(c + 8, c41), c += ldc;
  put(c, c50), put(c + 8, c51);
}

// the first R rows of a 6x16 tile (a bottom edge: M not a multiple of 6), each element by the
// same chain of FMAs and the same epilogue as micro_6x16, so its bits do not depend on M
template <int R>
void micro_rows_t(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) {
  __m256 acc[R][2];
  for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    for (int i = 0; i < R; i++) {
      const __m256 x = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]), acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
    }
    a += kMR;
    b += kNR;
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  for (int i = 0; i < R; i++, c += ldc)
    for (int h = 0; h < 2; h++) {
      __m256 r = _mm256_mul_ps(va, acc[i][h]);
      if (beta != 0.f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(c + 8 * h), r);
      _mm256_storeu_ps(c + 8 * h, r);
    }
}

void micro_rows(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) {
  switch (rows) {
    case 1: return micro_rows_t<1>(kc, a, b, c, ldc, alpha, beta);
    case 2: return micro_rows_t<2>(kc, a, b, c, ldc, alpha, beta);
    case 3: return micro_rows_t<3>(kc, a, b, c, ldc, alpha, beta);
    case 4: return micro_rows_t<4>(kc, a, b, c, ldc, alpha, beta);
    case 5: return micro_rows_t<5>(kc, a, b, c, ldc, alpha, beta);
    default: return micro_6x16(kc, a, b, c, ldc, alpha, beta);
  }
}

const GemmKernel kAvx2{"avx2-fma", kMR, kNR, 144, 256, 4096, micro_6x16, pack_a<kMR>, pack_b<kNR>, micro_rows};

}  // namespace

const GemmKernel* gemm_kernel_avx2() {
  return cpu_has_avx2_fma() ? &kAvx2 : nullptr;
}

}  // namespace vffn::cpu

#else

namespace vffn::cpu {
const vffn::cpu::GemmKernel* gemm_kernel_avx2() { return nullptr; }
}  // namespace vffn::cpu

#endif
