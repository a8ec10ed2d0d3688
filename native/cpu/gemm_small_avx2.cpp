// AVX2 + FMA small-M GEMM (decoding: 1..8 rows against big weights). op(B) is read in place, so a
// call streams the weights once instead of packing them. B^T ([N, K], k contiguous): each C
// element is a dot product, NB stored rows of B against all rows of A with 8-lane accumulators.
// plain B ([K, N]): column strips of 8*NV, each row of A broadcast against B's rows in k order.
// this file is compiled with -mavx2 -mfma and only called after a run-time CPU check.
#include "gemm_kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm_pack_x86.h"

namespace vffn::cpu {

namespace {

inline float widen(float x) { return x; }
inline float widen(uint16_t x) { return bf16_to_f32(x); }

// k block of the B^T kernel: NB stored rows x 512 floats stay in L1 while each chunk of A's rows
// passes over them. each block sums from zero and is then added to the running total, so no
// chain of float32 additions is longer than 64 + K / 512 (as the packed path's KC blocks).
constexpr int64_t kDotKB = kSmallKB;

template <int NB, int MR>
inline void dot_rows(int64_t k0, int64_t k1, const float* const* a, const float* const* b, int64_t ahead,
                     __m256 (*acc)[8]) {
  __m256 s[MR][NB];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NB; r++) s[i][r] = _mm256_setzero_ps();
  for (int64_t p = k0; p < k1; p += 8) {
    // each stored row is its own stream (often exactly one 4 KiB page, where the hardware
    // prefetcher starts over): fetch the same place in the next group's rows, `ahead` away
    if (ahead && (p * 4) % 64 == 0)
      for (int r = 0; r < NB; r++) _mm_prefetch(reinterpret_cast<const char*>(b[r] + ahead + p), _MM_HINT_T0);
    __m256 bv[NB];
    for (int r = 0; r < NB; r++) bv[r] = _mm256_loadu_ps(b[r] + p);
    for (int i = 0; i < MR; i++) {
      const __m256 av = _mm256_loadu_ps(a[i] + p);
      for (int r = 0; r < NB; r++) s[i][r] = _mm256_fmadd_ps(av, bv[r], s[i][r]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NB; r++) acc[i][r] = _mm256_add_ps(acc[i][r], s[i][r]);
}

// C[0:M, j:j+NB] for B^T; b[r] is stored row j + r
template <int NB>
void dot_cols(int64_t M, int64_t K, const float* const* a, const float* const* b, int64_t ahead, float alpha, float beta,
              float* c, int64_t ldc) {
  __m256 acc[kGemmSmallM][8];
  for (int64_t i = 0; i < M; i++)
    for (int r = 0; r < NB; r++) acc[i][r] = _mm256_setzero_ps();
  const int64_t K8 = K / 8 * 8;
  for (int64_t k0 = 0; k0 < K8; k0 += kDotKB) {
    const int64_t k1 = std::min(K8, k0 + kDotKB);
    // NB rows of B in registers against MR rows of A: 3 x 4 uses all 16 registers (12
    // accumulators, 3 rows of B, 1 of A) and loads 7 vectors per 12 FMAs
    int64_t i = 0;
    if constexpr (NB <= 3) {
      for (; i + 4 <= M; i += 4) dot_rows<NB, 4>(k0, k1, a + i, b, i ? 0 : ahead, acc + i);
      if (M - i == 3) dot_rows<NB, 3>(k0, k1, a + i, b, i ? 0 : ahead, acc + i), i += 3;
      if (M - i == 2) dot_rows<NB, 2>(k0, k1, a + i, b, i ? 0 : ahead, acc + i), i += 2;
    }
    for (; i < M; i++) dot_rows<NB, 1>(k0, k1, a + i, b, i ? 0 : ahead, acc + i);
  }
  for (int64_t i = 0; i < M; i++)
    for (int r = 0; r < NB; r++) {
      float v = hsum(acc[i][r]);
      for (int64_t p = K8; p < K; p++) v = std::fma(a[i][p], b[r][p], v);
      store_c(c + i * ldc + r, v, alpha, beta);
    }
}

// bfloat16 B^T: 16 weights a step, read as 8 32-bit lanes. lane l holds the pair (2l, 2l + 1) of
// the step's weights: the even one widened by a shift, the odd one by masking off the low half,
// so a step costs one load, a shift and an AND per row of B and no shuffles. op(A)'s rows are
// split the same way once per call (`ae`: per 16 columns, the 8 even then the 8 odd ones). lane
// l sums the even products of its k block in one chain and the odd ones in another (two chains:
// one chain of two FMAs a step held a row to half the float32 rate), then adds the two to its
// running total, in k order.
constexpr int64_t kPairKB = kSmallKB;

template <int NB, int MR>
inline void pair_rows(int64_t k0, int64_t k1, const float* const* ae, const uint16_t* const* b, int64_t ahead,
                      __m256 (*acc)[8]) {
  const __m256i hi_mask = _mm256_set1_epi32(int32_t(0xFFFF0000u));
  __m256 se[MR][NB], so[MR][NB];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NB; r++) se[i][r] = so[i][r] = _mm256_setzero_ps();
  for (int64_t p = k0; p < k1; p += 16) {
    if (ahead && (p * 2) % 64 == 0)
      for (int r = 0; r < NB; r++) _mm_prefetch(reinterpret_cast<const char*>(b[r] + ahead + p), _MM_HINT_T0);
    for (int r = 0; r < NB; r++) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[r] + p));
      const __m256 lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
      const __m256 hi = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
      for (int i = 0; i < MR; i++) {
        se[i][r] = _mm256_fmadd_ps(_mm256_loadu_ps(ae[i] + p), lo, se[i][r]);
        so[i][r] = _mm256_fmadd_ps(_mm256_loadu_ps(ae[i] + p + 8), hi, so[i][r]);
      }
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NB; r++) acc[i][r] = _mm256_add_ps(acc[i][r], _mm256_add_ps(se[i][r], so[i][r]));
}

// C[0:M, j:j+NB] for bfloat16 B^T; b[r] is stored row j + r, a[i] the row of op(A), ae[i] its
// split. register blocks of NB rows of B by MR rows of A, 2 * NB * MR <= 12 accumulators
template <int NB>
void pair_cols(int64_t M, int64_t K, const float* const* a, const float* const* ae, const uint16_t* const* b,
               int64_t ahead, float alpha, float beta, float* c, int64_t ldc) {
  __m256 acc[kGemmSmallM][8];
  for (int64_t i = 0; i < M; i++)
    for (int r = 0; r < NB; r++) acc[i][r] = _mm256_setzero_ps();
  const int64_t K16 = K / 16 * 16;
  for (int64_t k0 = 0; k0 < K16; k0 += kPairKB) {
    const int64_t k1 = std::min(K16, k0 + kPairKB);
    int64_t i = 0;
    if constexpr (NB == 1)
      for (; i + 4 <= M; i += 4) pair_rows<NB, 4>(k0, k1, ae + i, b, i ? 0 : ahead, acc + i);
    if constexpr (NB <= 3)
      for (; i + 2 <= M; i += 2) pair_rows<NB, 2>(k0, k1, ae + i, b, i ? 0 : ahead, acc + i);
    for (; i < M; i++) pair_rows<NB, 1>(k0, k1, ae + i, b, i ? 0 : ahead, acc + i);
  }
  for (int64_t i = 0; i < M; i++)
    for (int r = 0; r < NB; r++) {
      float v = hsum(acc[i][r]);
      for (int64_t p = K16; p < K; p++) v = std::fma(a[i][p], bf16_to_f32(b[r][p]), v);
      store_c(c + i * ldc + r, v, alpha, beta);
    }
}

void small_trans_bf16(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a,
                      const Mat& B, float beta, float* C, int64_t ldc) {
  const int64_t K16 = K / 16 * 16;
  // each thread splits op(A) for its own columns: M * K floats, against N * K weights read
  thread_local std::vector<float> split;
  split.resize(size_t(M * std::max<int64_t>(K16, 1)));
  const float* ae[kGemmSmallM];
  for (int64_t i = 0; i < M; i++) {
    float* o = split.data() + i * K16;
    for (int64_t p = 0; p < K16; p += 16)
      for (int l = 0; l < 8; l++) o[p + l] = a[i][p + 2 * l], o[p + 8 + l] = a[i][p + 2 * l + 1];
    ae[i] = o;
  }
  const uint16_t* d = static_cast<const uint16_t*>(B.data);
  const uint16_t* b[8];
  auto rows_at = [&](int64_t j0, int nb) {
    for (int r = 0; r < nb; r++) b[r] = d + (j0 + r) * B.ld;
  };
  // one stored row at a time (a single stream through memory, against up to 4 rows of A, the
  // step's widening shared by them), except past K = 2048 at M = 1 and 2: 4 or 2 rows of B,
  // which the hardware streams without prefetches; at M >= 3, 3 rows of B, prefetched a group
  // ahead up to K = 2048 as in small_trans_f32 (measured, bench/gemv-dtype.ts)
  int64_t j = n0;
  if (M == 1 && K > 2048)
    for (; j + 4 <= n1; j += 4) rows_at(j, 4), pair_cols<4>(M, K, a, ae, b, 0, alpha, beta, C + j, ldc);
  if (M == 2 && K > 2048)
    for (; j + 2 <= n1; j += 2) rows_at(j, 2), pair_cols<2>(M, K, a, ae, b, 0, alpha, beta, C + j, ldc);
  if (M >= 3)
    for (; j + 3 <= n1; j += 3)
      rows_at(j, 3), pair_cols<3>(M, K, a, ae, b, K <= 2048 ? 3 * B.ld : 0, alpha, beta, C + j, ldc);
  for (; j < n1; j++) rows_at(j, 1), pair_cols<1>(M, K, a, ae, b, 0, alpha, beta, C + j, ldc);
}

// float32 B^T (bfloat16 has small_trans_bf16)
void small_trans_f32(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a, const Mat& B,
                 float beta, float* C, int64_t ldc) {
  const float* d = static_cast<const float*>(B.data);
  const float* b[8];
  int64_t j = n0;
  auto rows_at = [&](int64_t j0, int nb) {
    for (int r = 0; r < nb; r++) b[r] = d + (j0 + r) * B.ld;
  };
  // one row of A: 8 rows of B as memory operands against 8 accumulators; more rows of A: 3 rows
  // of B at a time, reused from registers
  // short rows (up to 2,048 elements) are prefetched a group ahead; longer ones the hardware
  // streams well by itself, and the prefetches only took load slots (measured: K = 1024 M = 4
  // 1.6x faster with them, K = 4096 M = 1 1.4x slower)
  const int64_t g = K <= 2048 ? B.ld : 0;
  if (M <= 2 && K <= 2048)
    for (; j < n1; j++) rows_at(j, 1), dot_cols<1>(M, K, a, b, 0, alpha, beta, C + j, ldc);
  if (M == 1)
    for (; j + 8 <= n1; j += 8) rows_at(j, 8), dot_cols<8>(M, K, a, b, 8 * g, alpha, beta, C + j, ldc);
  for (; j + 3 <= n1; j += 3) rows_at(j, 3), dot_cols<3>(M, K, a, b, 3 * g, alpha, beta, C + j, ldc);
  for (; j < n1; j++) rows_at(j, 1), dot_cols<1>(M, K, a, b, 0, alpha, beta, C + j, ldc);
}

// k block of the plain-B kernel: 64 rows of a strip of up to 64 columns (16 KiB at most) stay
// in L1 while each row of A passes over them; each block sums from zero into its own partial,
// then adds it to the total (chains of at most 64 + K / 64 additions)
constexpr int64_t kAxpyKB = 64;

template <typename T, int NV, int MR>
inline void axpy_rows(int64_t k0, int64_t k1, const float* const* a, const T* d, int64_t ld, const int32_t* rows,
                      bool prefetch, __m256 (*acc)[8]) {
  __m256 s[MR][NV];
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) s[i][v] = _mm256_setzero_ps();
  for (int64_t p = k0; p < k1; p++) {
    const T* br = d + (rows ? int64_t(rows[p]) : p) * ld;
    // the strip's rows are ld apart: fetch 8 rows ahead while the weights come from memory
    if (prefetch && p + 8 < k1) {
      const char* ahead = reinterpret_cast<const char*>(d + (rows ? int64_t(rows[p + 8]) : p + 8) * ld);
      for (int q = 0; q < int(NV * 8 * sizeof(T)); q += 64) _mm_prefetch(ahead + q, _MM_HINT_T0);
    }
    __m256 bv[NV];
    for (int v = 0; v < NV; v++) bv[v] = load8(br + 8 * v);
    for (int i = 0; i < MR; i++) {
      const __m256 av = _mm256_broadcast_ss(a[i] + p);
      for (int v = 0; v < NV; v++) s[i][v] = _mm256_fmadd_ps(av, bv[v], s[i][v]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_add_ps(acc[i][v], s[i][v]);
}

// C[0:M, j:j+8*NV] for plain B: every element is a k-ordered chain of FMAs from zero
template <typename T, int NV>
void axpy_cols(int64_t M, int64_t K, const float* const* a, const Mat& B, int64_t j, float alpha, float beta, float* c,
               int64_t ldc) {
  const T* d = static_cast<const T*>(B.data) + j;
  __m256 acc[kGemmSmallM][8];
  for (int64_t i = 0; i < M; i++)
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
  // B's rows are often a power of two apart, so a block of them shares a few L1 sets and would
  // not stay there for the next row of A: with several rows, copy the block to a dense buffer
  alignas(32) float blk[kAxpyKB * 8 * NV];
  for (int64_t k0 = 0; k0 < K; k0 += kAxpyKB) {
    const int64_t k1 = std::min(K, k0 + kAxpyKB);
    if (M == 1) {
      axpy_rows<T, NV, 1>(k0, k1, a, d, B.ld, B.rows, true, acc);
      continue;
    }
    for (int64_t p = k0; p < k1; p++) {
      const T* br = d + (B.rows ? int64_t(B.rows[p]) : p) * B.ld;
      if (p + 8 < k1) {
        const char* ahead = reinterpret_cast<const char*>(d + (B.rows ? int64_t(B.rows[p + 8]) : p + 8) * B.ld);
        for (int q = 0; q < int(NV * 8 * sizeof(T)); q += 64) _mm_prefetch(ahead + q, _MM_HINT_T0);
      }
      for (int v = 0; v < NV; v++) _mm256_store_ps(blk + (p - k0) * 8 * NV + 8 * v, load8(br + 8 * v));
    }
    for (int64_t i = 0; i < M; i++) {
      const float* ai = a[i] + k0;  // the block's k run from 0
      axpy_rows<float, NV, 1>(0, k1 - k0, &ai, blk, 8 * NV, nullptr, false, acc + i);
    }
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  for (int64_t i = 0; i < M; i++)
    for (int v = 0; v < NV; v++) {
      float* p = c + i * ldc + 8 * v;
      __m256 r = _mm256_mul_ps(va, acc[i][v]);
      if (beta != 0.f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p), r);
      _mm256_storeu_ps(p, r);
    }
}

template <typename T>
void small_plain(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a, const Mat& B,
                 float beta, float* C, int64_t ldc) {
  int64_t j = n0;
  for (; j + 64 <= n1; j += 64) axpy_cols<T, 8>(M, K, a, B, j, alpha, beta, C + j, ldc);
  for (; j + 32 <= n1; j += 32) axpy_cols<T, 4>(M, K, a, B, j, alpha, beta, C + j, ldc);
  for (; j + 8 <= n1; j += 8) axpy_cols<T, 1>(M, K, a, B, j, alpha, beta, C + j, ldc);
  // the last columns one by one: a scalar FMA chain rounds exactly as a vector lane does
  const T* d = static_cast<const T*>(B.data);
  for (; j < n1; j++)
    for (int64_t i = 0; i < M; i++) {
      float v = 0.f;
      for (int64_t k0 = 0; k0 < K; k0 += kAxpyKB) {
        float part = 0.f;
        for (int64_t p = k0; p < std::min(K, k0 + kAxpyKB); p++)
          part = std::fma(a[i][p], widen(d[(B.rows ? int64_t(B.rows[p]) : p) * B.ld + j]), part);
        v += part;
      }
      store_c(C + i * ldc + j, v, alpha, beta);
    }
}

void small_avx2(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a, const Mat& B,
                float beta, float* C, int64_t ldc) {
  if (B.trans)
    return B.dtype == BF16 ? small_trans_bf16(M, n0, n1, K, alpha, a, B, beta, C, ldc)
                           : small_trans_f32(M, n0, n1, K, alpha, a, B, beta, C, ldc);
  B.dtype == BF16 ? small_plain<uint16_t>(M, n0, n1, K, alpha, a, B, beta, C, ldc)
                  : small_plain<float>(M, n0, n1, K, alpha, a, B, beta, C, ldc);
}

}  // namespace

GemmSmallFn gemm_small_avx2() {
  return cpu_has_avx2_fma() ? small_avx2 : nullptr;
}

}  // namespace vffn::cpu

#else

namespace vffn::cpu {
GemmSmallFn gemm_small_avx2() { return nullptr; }
}  // namespace vffn::cpu

#endif
