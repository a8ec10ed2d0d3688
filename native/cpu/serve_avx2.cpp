// the kernels of serve_kernels.h (a paged-attention row, the exponential sum) written with AVX2 +
// FMA intrinsics (the autovectorizer left their loops scalar): the same blocks, order of operations per lane and
// exponential polynomial, 8 lanes at a time. chosen at run time; this file is compiled with
// -mavx2 -mfma.
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

void row_avx2(const AttnRow& a) {
  const int64_t hd = a.hd, G = a.heads;
  alignas(32) float sstack[8 * kAttnKeyBlock];
  float ostack[2048], mstack[8], lstack[8];
  std::vector<float> heap;
  float *sc = sstack, *o = ostack, *m = mstack, *l = lstack;
  if (G > 8 || G * hd > 2048) {
    heap.resize(size_t(G * kAttnKeyBlock + G * hd + 2 * G));
    sc = heap.data(), o = sc + G * kAttnKeyBlock, m = o + G * hd, l = m + G;
  }
  std::fill(o, o + G * hd, 0.f);
  std::fill(m, m + G, -std::numeric_limits<float>::infinity());
  std::fill(l, l + G, 0.f);
  const int64_t hd8 = hd / 8 * 8;
  for (int64_t j0 = 0; j0 < a.keys; j0 += kAttnKeyBlock) {
    const int64_t n = std::min(kAttnKeyBlock, a.keys - j0), n8 = n / 8 * 8;
    for (int64_t t = 0; t < n; t++) {
      const int64_t j = j0 + t;
      const float* k = a.k + a.table[j / a.bs] * a.ks0 + (j % a.bs) * a.ks1;
      for (int64_t h = 0; h < G; h++) sc[h * kAttnKeyBlock + t] = dot(a.q + h * hd, k + h * hd, hd) * a.scale;
    }
    for (int64_t h = 0; h < G; h++) {
      float* s = sc + h * kAttnKeyBlock;
      float bm = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < n; t++) bm = std::max(bm, s[t]);
      if (bm > m[h]) {
        const float alpha = m[h] == -std::numeric_limits<float>::infinity() ? 0.f : exp1(m[h] - bm);
        for (int64_t c = 0; c < hd; c++) o[h * hd + c] *= alpha;
        l[h] *= alpha;
        m[h] = bm;
      }
      const __m256 mv = _mm256_set1_ps(m[h]);
      int64_t t = 0;
      for (; t < n8; t += 8) _mm256_storeu_ps(s + t, exp8(_mm256_sub_ps(_mm256_loadu_ps(s + t), mv)));
      for (; t < n; t++) s[t] = exp1(s[t] - m[h]);
      for (t = 0; t < n; t++) l[h] += s[t];
    }
    for (int64_t t = 0; t < n; t++) {
      const int64_t j = j0 + t;
      const float* v = a.v + a.table[j / a.bs] * a.vs0 + (j % a.bs) * a.vs1;
      for (int64_t h = 0; h < G; h++) {
        const float p = sc[h * kAttnKeyBlock + t];
        const __m256 pv = _mm256_set1_ps(p);
        float* oh = o + h * hd;
        const float* vh = v + h * hd;
        int64_t c = 0;
        for (; c < hd8; c += 8) _mm256_storeu_ps(oh + c, _mm256_fmadd_ps(pv, _mm256_loadu_ps(vh + c), _mm256_loadu_ps(oh + c)));
        for (; c < hd; c++) oh[c] = std::fma(p, vh[c], oh[c]);
      }
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

}  // namespace

ExpSumFn exp_sum_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? exp_sum_avx2_impl : nullptr;
}

AttnRowFn attn_row_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? row_avx2 : nullptr;
}

}  // namespace vffn::cpu
#else
namespace vffn::cpu {
AttnRowFn attn_row_avx2() { return nullptr; }
ExpSumFn exp_sum_avx2() { return nullptr; }
}  // namespace vffn::cpu
#endif
