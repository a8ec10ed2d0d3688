// AVX-512 small-M GEMM over B^T at 3..8 rows of A (decoding a few sequences at once). Each C
// element gets the AVX2 kernel's arithmetic (gemm_small_avx2.cpp; the order is stated in
// gemm_kernels.h), so a row's result does not depend on which kernel, or which M, computed it;
// the gain is 32 registers: bigger register blocks, fewer loads per FMA. Everything else (M <= 2,
// plain B, the last columns) goes to the AVX2 kernel. Compiled with -mavx512f -mavx512dq
// -mavx512bw -mavx512vl and only called after a run-time CPU check.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which it then warns about
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "gemm_kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__FMA__)
#include <algorithm>

#include "gemm_pack_x86.h"

namespace vffn::cpu {

namespace {

// prefetches go to L2 (measured against L1: 1.1-1.3x faster at M = 4..8, bench/README.md) and
// are issued with the first rows of A only, a group of stored rows ahead, every 64 bytes
inline void prefetch_l2(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }

// float32: two stored rows of B share a register (row 2r in the low 8 lanes, 2r + 1 in the high
// 8), against op(A)'s 8 floats broadcast to both halves. lane l of each half is the AVX2 kernel's
// lane l of that row: element l of every 8, one chain per k block.
template <int NP, int MR>
inline void f32_rows(int64_t k0, int64_t k1, const float* const* a, const float* const* b, int64_t ahead,
                     __m512 (*acc)[NP]) {
  __m512 s[MR][NP];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NP; r++) s[i][r] = _mm512_setzero_ps();
  for (int64_t p = k0; p < k1; p += 8) {
    if (ahead && (p * 4) % 64 == 0)
      for (int r = 0; r < 2 * NP; r++) prefetch_l2(b[r] + ahead + p);
    __m512 bv[NP];
    for (int r = 0; r < NP; r++)
      bv[r] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b[2 * r] + p)), _mm256_loadu_ps(b[2 * r + 1] + p), 1);
    for (int i = 0; i < MR; i++) {
      const __m512 av = _mm512_broadcast_f32x8(_mm256_loadu_ps(a[i] + p));
      for (int r = 0; r < NP; r++) s[i][r] = _mm512_fmadd_ps(av, bv[r], s[i][r]);
    }
  }
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NP; r++) acc[i][r] = _mm512_add_ps(acc[i][r], s[i][r]);
}

// C[0:MR, j:j + 2 NP] for float32 B^T; b[r] is stored row j + r. all MR rows of A in one block
// (2 MR <= 16 accumulators): one pass over each k block of B
template <int NP, int MR>
void f32_cols(int64_t K, const float* const* a, const float* const* b, int64_t ahead, float alpha, float beta,
              float* c, int64_t ldc) {
  __m512 acc[MR][NP];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NP; r++) acc[i][r] = _mm512_setzero_ps();
  const int64_t K8 = K / 8 * 8;
  for (int64_t k0 = 0; k0 < K8; k0 += kSmallKB) f32_rows<NP, MR>(k0, std::min(K8, k0 + kSmallKB), a, b, ahead, acc);
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NP; r++) {
      float v0 = hsum(_mm512_castps512_ps256(acc[i][r])), v1 = hsum(_mm512_extractf32x8_ps(acc[i][r], 1));
      for (int64_t p = K8; p < K; p++) v0 = std::fma(a[i][p], b[2 * r][p], v0), v1 = std::fma(a[i][p], b[2 * r + 1][p], v1);
      store_c(c + i * ldc + 2 * r, v0, alpha, beta);
      store_c(c + i * ldc + 2 * r + 1, v1, alpha, beta);
    }
}

// bfloat16: one stored row per register, 16 weights in k order (widened by vpmovzxwd and a
// shift), against 16 floats of op(A) as they lie. lane 2l is the AVX2 kernel's even chain of its
// lane l, lane 2l + 1 its odd chain; at the k block's end the even and odd lanes are gathered and
// added, then added to the running total, as there.
template <int NB, int MR>
inline void bf16_rows(int64_t k0, int64_t k1, const float* const* a, const uint16_t* const* b, int64_t ahead,
                      __m256 (*acc)[NB]) {
  __m512 s[MR][NB];
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NB; r++) s[i][r] = _mm512_setzero_ps();
  for (int64_t p = k0; p < k1; p += 16) {
    if (ahead && (p * 2) % 64 == 0)
      for (int r = 0; r < NB; r++) prefetch_l2(b[r] + ahead + p);
    __m512 bv[NB];
    for (int r = 0; r < NB; r++) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[r] + p));
      bv[r] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    for (int i = 0; i < MR; i++) {
      const __m512 av = _mm512_loadu_ps(a[i] + p);
      for (int r = 0; r < NB; r++) s[i][r] = _mm512_fmadd_ps(av, bv[r], s[i][r]);
    }
  }
  const __m512i even_odd = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (int i = 0; i < MR; i++)
    for (int r = 0; r < NB; r++) {
      const __m512 t = _mm512_permutexvar_ps(even_odd, s[i][r]);
      acc[i][r] = _mm256_add_ps(acc[i][r], _mm256_add_ps(_mm512_castps512_ps256(t), _mm512_extractf32x8_ps(t, 1)));
    }
}

// C[0:M, j:j + NB] for bfloat16 B^T: blocks of 4 rows of A (16 accumulators), then the rest
template <int NB>
void bf16_cols(int64_t M, int64_t K, const float* const* a, const uint16_t* const* b, int64_t ahead, float alpha,
               float beta, float* c, int64_t ldc) {
  __m256 acc[kGemmSmallM][NB];
  for (int64_t i = 0; i < M; i++)
    for (int r = 0; r < NB; r++) acc[i][r] = _mm256_setzero_ps();
  const int64_t K16 = K / 16 * 16;
  for (int64_t k0 = 0; k0 < K16; k0 += kSmallKB) {
    const int64_t k1 = std::min(K16, k0 + kSmallKB);
    int64_t i = 0;
    for (; i + 4 <= M; i += 4) bf16_rows<NB, 4>(k0, k1, a + i, b, i ? 0 : ahead, acc + i);
    const int64_t pf = i ? 0 : ahead;
    switch (M - i) {
      case 3: bf16_rows<NB, 3>(k0, k1, a + i, b, pf, acc + i); break;
      case 2: bf16_rows<NB, 2>(k0, k1, a + i, b, pf, acc + i); break;
      case 1: bf16_rows<NB, 1>(k0, k1, a + i, b, pf, acc + i); break;
      default: break;
    }
  }
  for (int64_t i = 0; i < M; i++)
    for (int r = 0; r < NB; r++) {
      float v = hsum(acc[i][r]);
      for (int64_t p = K16; p < K; p++) v = std::fma(a[i][p], bf16_to_f32(b[r][p]), v);
      store_c(c + i * ldc + r, v, alpha, beta);
    }
}

template <int MR>
int64_t f32_trans(int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a, const Mat& B, float beta,
                  float* C, int64_t ldc) {
  const float* d = static_cast<const float*>(B.data);
  const float* b[4];
  int64_t j = n0;
  for (; j + 4 <= n1; j += 4) {
    for (int r = 0; r < 4; r++) b[r] = d + (j + r) * B.ld;
    f32_cols<2, MR>(K, a, b, 4 * B.ld, alpha, beta, C + j, ldc);
  }
  return j;
}

GemmSmallFn g_avx2 = nullptr;  // set before small_avx512 is handed out

void small_avx512(int64_t M, int64_t n0, int64_t n1, int64_t K, float alpha, const float* const* a, const Mat& B,
                  float beta, float* C, int64_t ldc) {
  if (!B.trans || M < 3 || M > kGemmSmallM) return g_avx2(M, n0, n1, K, alpha, a, B, beta, C, ldc);
  // 4 stored rows at a time, one group ahead prefetched (measured against 2, 3 and 6 rows and
  // other row blockings of A, bench/README.md); the last columns go to the AVX2 kernel
  int64_t j = n0;
  if (B.dtype == BF16) {
    const uint16_t* d = static_cast<const uint16_t*>(B.data);
    const uint16_t* b[4];
    for (; j + 4 <= n1; j += 4) {
      for (int r = 0; r < 4; r++) b[r] = d + (j + r) * B.ld;
      bf16_cols<4>(M, K, a, b, 4 * B.ld, alpha, beta, C + j, ldc);
    }
  } else {
    switch (M) {
      case 3: j = f32_trans<3>(n0, n1, K, alpha, a, B, beta, C, ldc); break;
      case 4: j = f32_trans<4>(n0, n1, K, alpha, a, B, beta, C, ldc); break;
      case 5: j = f32_trans<5>(n0, n1, K, alpha, a, B, beta, C, ldc); break;
      case 6: j = f32_trans<6>(n0, n1, K, alpha, a, B, beta, C, ldc); break;
      case 7: j = f32_trans<7>(n0, n1, K, alpha, a, B, beta, C, ldc); break;
      default: j = f32_trans<8>(n0, n1, K, alpha, a, B, beta, C, ldc); break;
    }
  }
  if (j < n1) g_avx2(M, j, n1, K, alpha, a, B, beta, C, ldc);
}

}  // namespace

GemmSmallFn gemm_small_avx512() {
  if (!cpu_has_avx512()) return nullptr;
  g_avx2 = gemm_small_avx2();
  return g_avx2 ? small_avx512 : nullptr;
}

}  // namespace vffn::cpu

#else

namespace vffn::cpu {
GemmSmallFn gemm_small_avx512() { return nullptr; }
}  // namespace vffn::cpu

#endif
