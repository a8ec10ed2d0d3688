// the kernels of serve_kernels.h (a paged-attention row, the exponential sum) written with AVX2 +
// FMA intrinsics (the autovectorizer left their loops scalar): the same key blocks and exponential
// polynomial; a block's maximum and weight sum 8 lanes at a time, and each output column's sum
// over the block's keys kept in a register (through memory it was one store-to-load chain per
// key). chosen at run time; this file is compiled with -mavx2 -mfma.
#include "gemm_kernels.h"
#include "serve_kernels.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include <vector>

namespace vffn::cpu {

namespace {

// the 8 lanes added as dot_lanes adds them: (0+4)+(2+6), (1+5)+(3+7), then the two
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float dot(const float* q, const float* k, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(k + c), acc);
  float t = hsum(acc);
  for (; c < n; c++) t = std::fma(q[c], k[c], t);
  return t;
}

// exp_nonpos of serve_kernels.h on 8 lanes (NaN stays NaN: max returns its second operand)
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(lo, x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x));
  __m256 p = _mm256_set1_ps(1.f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

inline float exp1(float x) { return _mm256_cvtss_f32(exp8(_mm256_set1_ps(x))); }

// the block's largest score and, after exponentiation, the sum of its weights: 8 lanes, then
// the lanes pairwise (hsum), then the tail in order
inline float block_max(const float* s, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t t = 0;
  for (; t + 8 <= n; t += 8) m = _mm256_max_ps(_mm256_loadu_ps(s + t), m);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  float r = _mm_cvtss_f32(h);
  for (; t < n; t++) r = std::max(r, s[t]);
  return r;
}

// dot(q, k[t], hd) for 8 keys at once, hd a multiple of 8: each key's 8-lane sum is the same
// chain of FMAs, and the 8 sums are reduced as hsum() reduces one ((0+4)+(2+6)) + ((1+5)+(3+7)),
// lane-parallel: the halves, then the pairs two apart, then adjacent pairs; lane t is key t
inline __m256 dot8(const float* q, const float* const* k, int64_t hd) {
  __m256 acc[8];
  for (int t = 0; t < 8; t++) acc[t] = _mm256_setzero_ps();
  for (int64_t c = 0; c < hd; c += 8) {
    const __m256 qv = _mm256_loadu_ps(q + c);
    for (int t = 0; t < 8; t++) acc[t] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k[t] + c), acc[t]);
  }
  __m256 x[4];  // x[i]: lanes 0-3 the halves of key 2i added, lanes 4-7 of key 2i + 1
  for (int i = 0; i < 4; i++)
    x[i] = _mm256_add_ps(_mm256_permute2f128_ps(acc[2 * i], acc[2 * i + 1], 0x20), _mm256_permute2f128_ps(acc[2 * i], acc[2 * i + 1], 0x31));
  const __m256 y0 = _mm256_add_ps(_mm256_shuffle_ps(x[0], x[1], 0x44), _mm256_shuffle_ps(x[0], x[1], 0xEE));
  const __m256 y1 = _mm256_add_ps(_mm256_shuffle_ps(x[2], x[3], 0x44), _mm256_shuffle_ps(x[2], x[3], 0xEE));
  // keys 0 2 4 6 | 1 3 5 7, put in order
  return _mm256_permutevar8x32_ps(_mm256_hadd_ps(y0, y1), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// the weighted values of heads whose outputs span 64 columns together (HPC heads of 64 / HPC
// columns: hd = 64 / HPC), 8 registers held over the block's keys: each output column is still
// its own chain of FMAs over the keys in order
template <int HPC>
inline void values64(float* o, const float* sc, const float* const* vrow, int64_t col, int64_t n) {
  constexpr int VPH = 8 / HPC;  // registers per head
  __m256 acc[8];
  for (int i = 0; i < 8; i++) acc[i] = _mm256_loadu_ps(o + col + 8 * i);
  for (int64_t u = 0; u < n; u++) {
    const float* v = vrow[u] + col;
    for (int h = 0; h < HPC; h++) {
      const __m256 p = _mm256_set1_ps(sc[h * kAttnKeyBlock + u]);
      for (int i = h * VPH; i < (h + 1) * VPH; i++) acc[i] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * i), acc[i]);
    }
  }
  for (int i = 0; i < 8; i++) _mm256_storeu_ps(o + col + 8 * i, acc[i]);
}

// one head's weighted values, 32 columns at a time in registers (any hd)
inline void values_head(float* oh, const float* s, const float* const* vrow, int64_t off, int64_t hd, int64_t n) {
  int64_t c = 0;
  for (; c + 32 <= hd; c += 32) {
    __m256 o0 = _mm256_loadu_ps(oh + c), o1 = _mm256_loadu_ps(oh + c + 8), o2 = _mm256_loadu_ps(oh + c + 16), o3 = _mm256_loadu_ps(oh + c + 24);
    for (int64_t u = 0; u < n; u++) {
      const __m256 p = _mm256_set1_ps(s[u]);
      const float* v = vrow[u] + off + c;
      o0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v), o0);
      o1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8), o1);
      o2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 16), o2);
      o3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 24), o3);
    }
    _mm256_storeu_ps(oh + c, o0), _mm256_storeu_ps(oh + c + 8, o1), _mm256_storeu_ps(oh + c + 16, o2), _mm256_storeu_ps(oh + c + 24, o3);
  }
  for (; c + 8 <= hd; c += 8) {
    __m256 o0 = _mm256_loadu_ps(oh + c);
    for (int64_t u = 0; u < n; u++) o0 = _mm256_fmadd_ps(_mm256_set1_ps(s[u]), _mm256_loadu_ps(vrow[u] + off + c), o0);
    _mm256_storeu_ps(oh + c, o0);
  }
  for (; c < hd; c++) {
    float x = oh[c];
    for (int64_t u = 0; u < n; u++) x = std::fma(s[u], vrow[u][off + c], x);
    oh[c] = x;
  }
}

void row_avx2(const AttnRow& a) {
  const int64_t hd = a.hd, G = a.heads;
  AttnScratch w(G, hd);
  float *sc = w.sc, *o = w.o, *m = w.m, *l = w.l;
  const float* vrow[kAttnKeyBlock];
  const float* krow[kAttnKeyBlock];
  const __m256 scale = _mm256_set1_ps(a.scale);
  for (int64_t j0 = 0; j0 < a.keys; j0 += kAttnKeyBlock) {
    const int64_t n = std::min(kAttnKeyBlock, a.keys - j0), n8 = n / 8 * 8;
    for (int64_t t = 0; t < n; t++) {
      const int64_t j = j0 + t, blk = a.table[j / a.bs];
      krow[t] = a.k + blk * a.ks0 + (j % a.bs) * a.ks1;
      vrow[t] = a.v + blk * a.vs0 + (j % a.bs) * a.vs1;
    }
    // the block's scores: 8 keys at a time per head while their rows are in L1 (every head of the
    // group from each key row, one contiguous run), the rest one by one
    int64_t t = 0;
    if (hd % 8 == 0)
      for (; t < n8; t += 8)
        for (int64_t h = 0; h < G; h++) {
          const float* k8[8];
          for (int i = 0; i < 8; i++) k8[i] = krow[t + i] + h * hd;
          _mm256_storeu_ps(sc + h * kAttnKeyBlock + t, _mm256_mul_ps(dot8(a.q + h * hd, k8, hd), scale));
        }
    for (; t < n; t++)
      for (int64_t h = 0; h < G; h++) sc[h * kAttnKeyBlock + t] = dot(a.q + h * hd, krow[t] + h * hd, hd) * a.scale;
    // per head: the new maximum, the rescaled running output, the block's weights
    for (int64_t h = 0; h < G; h++) {
      float* s = sc + h * kAttnKeyBlock;
      float* oh = o + h * hd;
      const float bm = block_max(s, n);
      if (bm > m[h]) {
        const float alpha = m[h] == -std::numeric_limits<float>::infinity() ? 0.f : exp1(m[h] - bm);
        for (int64_t c = 0; c < hd; c++) oh[c] *= alpha;
        l[h] *= alpha;
        m[h] = bm;
      }
      const __m256 mv = _mm256_set1_ps(m[h]);
      __m256 lv = _mm256_setzero_ps();
      int64_t u = 0;
      for (; u < n8; u += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + u), mv));
        _mm256_storeu_ps(s + u, e);
        lv = _mm256_add_ps(lv, e);
      }
      float lb = hsum(lv);
      for (; u < n; u++) lb += (s[u] = exp1(s[u] - m[h]));
      l[h] += lb;
    }
    // the weighted values: 64 output columns (one head of 64, two of 32) in 8 registers where the
    // head size allows, else head by head
    if (hd % 64 == 0 || (hd == 32 && G % 2 == 0)) {
      for (int64_t col = 0; col < G * hd; col += 64) {
        const float* s = sc + (col / hd) * kAttnKeyBlock;
        if (hd == 32)
          values64<2>(o, s, vrow, col, n);
        else
          values64<1>(o, s, vrow, col, n);
      }
    } else {
      for (int64_t h = 0; h < G; h++) values_head(o + h * hd, sc + h * kAttnKeyBlock, vrow, h * hd, hd, n);
    }
  }
  for (int64_t h = 0; h < G; h++) {
    const float inv = 1.f / l[h];
    for (int64_t c = 0; c < hd; c++) a.out[h * hd + c] = o[h * hd + c] * inv;
  }
}

double exp_sum_avx2_impl(const float* x, int64_t n, float mx) {
  const __m256 mv = _mm256_set1_ps(mx);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();  // lanes 0-3 and 4-7
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), mv));
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double s[8];
  _mm256_store_pd(s, lo);
  _mm256_store_pd(s + 4, hi);
  for (int i = 0; j < n; j++, i++) s[i] += double(exp1(x[j] - mx));
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

// 4 running maxima of 8 lanes (max_ps returns its second operand, the running maximum, when
// the new value is NaN), then the lanes, then the tail
float row_max_avx2_impl(const float* x, int64_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  __m256 m0 = _mm256_set1_ps(ninf), m1 = m0, m2 = m0, m3 = m0;
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + j), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + j + 8), m1);
    m2 = _mm256_max_ps(_mm256_loadu_ps(x + j + 16), m2);
    m3 = _mm256_max_ps(_mm256_loadu_ps(x + j + 24), m3);
  }
  for (; j + 8 <= n; j += 8) m0 = _mm256_max_ps(_mm256_loadu_ps(x + j), m0);
  alignas(32) float l[8];
  _mm256_store_ps(l, _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  float mx = ninf;
  for (int i = 0; i < 8; i++) mx = std::max(mx, l[i]);
  for (; j < n; j++) mx = std::max(mx, x[j]);
  return mx;
}

}  // namespace

RowMaxFn row_max_avx2() {
  return cpu_has_avx2_fma() ? row_max_avx2_impl : nullptr;
}

ExpSumFn exp_sum_avx2() {
  return cpu_has_avx2_fma() ? exp_sum_avx2_impl : nullptr;
}

AttnRowFn attn_row_avx2() {
  return cpu_has_avx2_fma() ? row_avx2 : nullptr;
}

}  // namespace vffn::cpu
#else
namespace vffn::cpu {
AttnRowFn attn_row_avx2() { return nullptr; }
ExpSumFn exp_sum_avx2() { return nullptr; }
RowMaxFn row_max_avx2() { return nullptr; }
}  // namespace vffn::cpu
#endif
