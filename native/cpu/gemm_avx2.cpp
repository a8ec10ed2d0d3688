// AVX2 + FMA GEMM pieces: a 6x16 micro-kernel (12 ymm accumulators, 2 B loads and 6 broadcasts
// per k) and vectorised packing of op(B) (row copies, bf16 widening, 8x8 transposes for B^T).
// this file is compiled with -mavx2 -mfma and only called after a run-time CPU check.
#include "gemm_kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>

#include "../core/dtype.h"

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

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// r[i] holds row i of an 8x8 block; afterwards r[i] holds column i
inline void transpose8(__m256* r) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20), r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20), r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31), r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31), r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// full panels of NR columns; returns how many columns it packed (the rest go to the generic path)
template <typename T>
int64_t pack_b_full(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, float* dst) {
  const T* d = static_cast<const T*>(B.data);
  const int64_t full = n / kNR * kNR;
  for (int64_t jr = 0; jr < full; jr += kNR, dst += k * kNR) {
    if (!B.trans) {
      for (int64_t p = 0; p < k; p++) {
        const int64_t r = B.rows ? int64_t(B.rows[p0 + p]) : p0 + p;
        const T* s = d + r * B.ld + j0 + jr;
        _mm256_store_ps(dst + p * kNR, load8(s));
        _mm256_store_ps(dst + p * kNR + 8, load8(s + 8));
      }
      continue;
    }
    // B^T: column j of op(B) is stored row j; transpose 8x8 blocks
    const T* s = d + (j0 + jr) * B.ld + p0;
    int64_t p = 0;
    for (; p + 8 <= k; p += 8)
      for (int h = 0; h < 2; h++) {
        __m256 r[8];
        for (int q = 0; q < 8; q++) r[q] = load8(s + (h * 8 + q) * B.ld + p);
        transpose8(r);
        for (int q = 0; q < 8; q++) _mm256_store_ps(dst + (p + q) * kNR + h * 8, r[q]);
      }
    for (; p < k; p++)
      for (int j = 0; j < kNR; j++) {
        if constexpr (sizeof(T) == 2)
          dst[p * kNR + j] = bf16_to_f32(s[j * B.ld + p]);
        else
          dst[p * kNR + j] = s[j * B.ld + p];
      }
  }
  return full;
}

void pack_b(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, float* dst) {
  const int64_t done = B.dtype == BF16 ? pack_b_full<uint16_t>(B, p0, k, j0, n, dst)
                                       : pack_b_full<float>(B, p0, k, j0, n, dst);
  if (done < n) gemm_pack_b_generic(B, p0, k, j0 + done, n - done, kNR, dst + done * k);
}

// full panels of MR rows; returns how many rows it packed (the rest go to the generic path)
template <typename T>
int64_t pack_a_full(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, float* dst) {
  const T* d = static_cast<const T*>(A.data);
  const int64_t full = m / kMR * kMR;
  for (int64_t ir = 0; ir < full; ir += kMR, dst += k * kMR) {
    if (A.trans) {  // element (i, p) is stored at [p, i]: MR contiguous values per p
      const T* s = d + p0 * A.ld + i0 + ir;
      for (int64_t p = 0; p < k; p++)
        for (int i = 0; i < kMR; i++) {
          if constexpr (sizeof(T) == 2)
            dst[p * kMR + i] = bf16_to_f32(s[p * A.ld + i]);
          else
            dst[p * kMR + i] = s[p * A.ld + i];
        }
      continue;
    }
    const T* row[kMR];
    for (int i = 0; i < kMR; i++) {
      const int64_t r = i0 + ir + i;
      row[i] = d + (A.rows ? int64_t(A.rows[r]) : r) * A.ld + p0;
    }
    int64_t p = 0;
    // 8 k at a time: transpose 6 rows (+2 zero rows) and store each column of 6 with an 8-wide
    // store whose 2 extra lanes are overwritten by the next store (the buffer has slack at the end)
    for (; p + 8 <= k; p += 8) {
      __m256 r[8];
      for (int i = 0; i < kMR; i++) r[i] = load8(row[i] + p);
      r[6] = r[7] = _mm256_setzero_ps();
      transpose8(r);
      for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (p + q) * kMR, r[q]);
    }
    for (; p < k; p++)
      for (int i = 0; i < kMR; i++) {
        if constexpr (sizeof(T) == 2)
          dst[p * kMR + i] = bf16_to_f32(row[i][p]);
        else
          dst[p * kMR + i] = row[i][p];
      }
  }
  return full;
}

void pack_a(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, float* dst) {
  const int64_t done = A.dtype == BF16 ? pack_a_full<uint16_t>(A, i0, m, p0, k, dst)
                                       : pack_a_full<float>(A, i0, m, p0, k, dst);
  if (done < m) gemm_pack_a_generic(A, i0 + done, m - done, p0, k, kMR, dst + done * k);
}

const GemmKernel kAvx2{"avx2-fma", kMR, kNR, 144, 256, 4096, micro_6x16, pack_a, pack_b};

}  // namespace

const GemmKernel* gemm_kernel_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &kAvx2 : nullptr;
}

}  // namespace vffn::cpu

#else

namespace vffn::cpu {
const vffn::cpu::GemmKernel* gemm_kernel_avx2() { return nullptr; }
}  // namespace vffn::cpu

#endif
