// vectorised packing for the x86 GEMM kernels (AVX2 instructions), templated on the micro-tile.
// everything here has internal linkage: each kernel file that includes it compiles its own copy
// with its own instruction set, so code built for a wider set never leaks into another path.
#pragma once
#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "../core/dtype.h"
#include "gemm_kernels.h"

namespace vffn::cpu {
namespace {

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// shared by the small-M kernels (gemm_small_*.cpp), so their results are the same bits.
// the 8 lanes added in one fixed order: halves, then pairs, then the last two
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// the k block of the small-M B^T kernels: every C element sums each block of 512 from zero, then
// adds it to its running total
constexpr int64_t kSmallKB = 512;

// the small-M store, with the packed kernel's epilogue: r = alpha * acc, then beta * c + r fused (C unread when beta == 0)
inline void store_c(float* c, float acc, float alpha, float beta) {
  const float r = alpha * acc;
  *c = beta == 0.f ? r : std::fma(beta, *c, r);
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
template <typename T, int kNR>
int64_t pack_b_full(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, float* dst) {
  const T* d = static_cast<const T*>(B.data);
  const int64_t full = n / kNR * kNR;
  constexpr int kLine = 64 / sizeof(T);  // elements per cache line
  auto row_of = [&](int64_t p) { return B.rows ? int64_t(B.rows[p0 + p]) : p0 + p; };
  if (!B.trans) {  // row by row, so each stored row of B streams through once
    for (int64_t p = 0; p < k; p++) {
      const T* s = d + row_of(p) * B.ld + j0;
      // B usually comes from memory, not cache: fetch the row 4 ahead while this one is copied
      if (p + 4 < k) {
        const T* ahead = d + row_of(p + 4) * B.ld + j0;
        for (int64_t j = 0; j < full; j += kLine) _mm_prefetch(reinterpret_cast<const char*>(ahead + j), _MM_HINT_T0);
      }
      for (int64_t jr = 0; jr < full; jr += kNR)
        for (int h = 0; h < kNR; h += 8) _mm256_store_ps(dst + jr * k + p * kNR + h, load8(s + jr + h));
    }
    return full;
  }
  for (int64_t jr = 0; jr < full; jr += kNR, dst += k * kNR) {
    // B^T: column j of op(B) is stored row j; transpose 8x8 blocks
    const T* s = d + (j0 + jr) * B.ld + p0;
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) {
      // the next micro-panel's kNR stored rows, one cache line each, into L2 ahead of its turn:
      // without this, packing a B that is not in cache waits on memory row by row
      if (p % kLine == 0)
        for (int q = 0; q < kNR; q++)
          _mm_prefetch(reinterpret_cast<const char*>(s + (kNR + q) * B.ld + p), _MM_HINT_T1);
      for (int h = 0; h < kNR / 8; h++) {
        __m256 r[8];
        for (int q = 0; q < 8; q++) r[q] = load8(s + (h * 8 + q) * B.ld + p);
        transpose8(r);
        for (int q = 0; q < 8; q++) _mm256_store_ps(dst + (p + q) * kNR + h * 8, r[q]);
      }
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

template <int kNR>
void pack_b(const Mat& B, int64_t p0, int64_t k, int64_t j0, int64_t n, float* dst) {
  const int64_t done = B.dtype == BF16 ? pack_b_full<uint16_t, kNR>(B, p0, k, j0, n, dst)
                                       : pack_b_full<float, kNR>(B, p0, k, j0, n, dst);
  if (done < n) gemm_pack_b_generic(B, p0, k, j0 + done, n - done, kNR, dst + done * k);
}

// full panels of MR rows; returns how many rows it packed (the rest go to the generic path)
template <typename T, int kMR>
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
    // 8 k at a time: transpose MR rows (+ zero rows up to 8) and store each column of MR with an
    // 8-wide store whose extra lanes the next store overwrites; the panel's very last column is
    // stored exactly, so panels packed by different threads never touch each other
    for (; p + 8 <= k; p += 8) {
      __m256 r[8];
      for (int i = 0; i < kMR; i++) r[i] = load8(row[i] + p);
      for (int i = kMR; i < 8; i++) r[i] = _mm256_setzero_ps();
      transpose8(r);
      for (int q = 0; q < 8; q++) {
        if (kMR < 8 && p + q + 1 == k) {
          alignas(32) float last[8];
          _mm256_store_ps(last, r[q]);
          std::copy(last, last + kMR, dst + (p + q) * kMR);
        } else {
          _mm256_storeu_ps(dst + (p + q) * kMR, r[q]);
        }
      }
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

template <int kMR>
void pack_a(const Mat& A, int64_t i0, int64_t m, int64_t p0, int64_t k, float* dst) {
  const int64_t done = A.dtype == BF16 ? pack_a_full<uint16_t, kMR>(A, i0, m, p0, k, dst)
                                       : pack_a_full<float, kMR>(A, i0, m, p0, k, dst);
  if (done < m) gemm_pack_a_generic(A, i0 + done, m - done, p0, k, kMR, dst + done * k);
}

}  // namespace
}  // namespace vffn::cpu

#endif
