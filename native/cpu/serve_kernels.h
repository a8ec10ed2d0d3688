// the serving kernels that have an AVX2 + FMA twin (serve_avx2.cpp), chosen at run time.
//
// one query row of paged attention, for a group of heads: its keys in blocks of kAttnKeyBlock,
// each key row read once for all heads of the group (a pool row holds every head; walking it
// head by head touched each page of the pool once per head). per head, a block's scores come
// first (8-lane dot products the compiler vectorizes), then one rescale of the running output
// by the block's new maximum, then the block's exponentials (a polynomial the compiler also
// vectorizes) and values. a score depends only on q and its key, and blocks start at key 0, so a
// row's result never depends on the other rows of the batch. included by serve.cpp (portable)
// and serve_avx2.cpp (compiled with AVX2 + FMA), each getting its own copy.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "lm.h"

namespace vffn::cpu {

// one query row of `heads` consecutive heads, and where its keys and values are: key j is row
// j % bs of block table[j / bs]. each head's arithmetic is the same whatever the grouping.
struct AttnRow {
  const float* q;  // heads * hd floats
  const float *k, *v;  // the pools, already offset to the group's first head
  int64_t ks0, ks1, vs0, vs1;  // block and row strides of the pools
  const int32_t* table;
  int64_t bs, heads, hd, keys;
  float scale;
  float* out;  // heads * hd floats
};
using AttnRowFn = void (*)(const AttnRow&);
AttnRowFn attn_row_avx2();  // nullptr without AVX2 + FMA (build or machine)
void attn_row_portable(const AttnRow& r);

constexpr int64_t kAttnKeyBlock = 64;

// a row kernel's working space for G heads of hd columns: a key block's scores per head, the
// running output sums, maxima and weight sums; on the stack up to 8 heads and 2,048 columns.
// starts as an empty softmax: sums 0, maxima -inf.
struct AttnScratch {
  alignas(32) float sstack[8 * kAttnKeyBlock];
  float ostack[2048], mstack[8], lstack[8];
  std::vector<float> heap;
  float *sc = sstack, *o = ostack, *m = mstack, *l = lstack;
  AttnScratch(int64_t G, int64_t hd) {
    if (G > 8 || G * hd > 2048) {
      heap.resize(size_t(G * kAttnKeyBlock + G * hd + 2 * G));
      sc = heap.data(), o = sc + G * kAttnKeyBlock, m = o + G * hd, l = m + G;
    }
    std::fill(o, o + G * hd, 0.f);
    std::fill(m, m + G, -std::numeric_limits<float>::infinity());
    std::fill(l, l + G, 0.f);
  }
};

// sum over j < n of e^(x[j] - mx), for mx >= every x[j]: the log-probability's normalizer. each
// term is exp_nonpos in float32; the terms are added in float64, lane j % 8 into its own sum,
// the 8 sums added pairwise at the end.
using ExpSumFn = double (*)(const float* x, int64_t n, float mx);
ExpSumFn exp_sum_avx2();  // nullptr without AVX2 + FMA
double exp_sum_portable(const float* x, int64_t n, float mx);

// the largest of x[0..n) that is not NaN (-inf when none is): the value a running
// mx = std::max(mx, x[j]) from -inf gives, NaNs skipped. exact, so any order gives it.
using RowMaxFn = float (*)(const float* x, int64_t n);
RowMaxFn row_max_avx2();  // nullptr without AVX2 + FMA
float row_max_portable(const float* x, int64_t n);

}  // namespace vffn::cpu

// the implementation, in the namespace the including file names
#ifdef ATTN_ROW_NS

namespace vffn::cpu {
namespace ATTN_ROW_NS {

// q . k over n floats: 8 running sums (lane c % 8), added pairwise, then the tail
inline float dot_lanes(const float* __restrict q, const float* __restrict k, int64_t n) {
  float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int i = 0; i < 8; i++) s[i] += q[c + i] * k[c + i];
  float t = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
  for (; c < n; c++) t += q[c] * k[c];
  return t;
}

// e^x for x <= 0 within 1e-7 relative: 2^n p(r), n = round(x log2 e), r = x - n ln 2 in two
// parts, p the degree-7 Taylor polynomial (|r| <= ln2 / 2); below -87 the result is 0
inline float exp_nonpos(float x) {
  const bool under = x < -87.f;
  x = std::max(x, -87.f);
  const float n = std::nearbyint(x * 1.44269504f);
  const float r = std::fma(n, 2.12194440e-4f, std::fma(n, -0.693359375f, x));
  float p = 1.f / 5040;
  p = std::fma(p, r, 1.f / 720);
  p = std::fma(p, r, 1.f / 120);
  p = std::fma(p, r, 1.f / 24);
  p = std::fma(p, r, 1.f / 6);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.f);
  p = std::fma(p, r, 1.f);
  const int32_t e = (int32_t(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &e, sizeof two_n);
  return under ? 0.f : p * two_n;
}

inline float row_max(const float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; j++) mx = std::max(mx, x[j]);
  return mx;
}

inline double exp_sum(const float* x, int64_t n, float mx) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int i = 0; i < 8; i++) s[i] += double(exp_nonpos(x[j + i] - mx));
  for (int i = 0; j < n; j++, i++) s[i] += double(exp_nonpos(x[j] - mx));
  return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

inline void attn_row(const AttnRow& a) {
  const int64_t hd = a.hd, G = a.heads;
  AttnScratch w(G, hd);
  float *sc = w.sc, *o = w.o, *m = w.m, *l = w.l;
  for (int64_t j0 = 0; j0 < a.keys; j0 += kAttnKeyBlock) {
    const int64_t n = std::min(kAttnKeyBlock, a.keys - j0);
    // the block's key rows in order, every head of the group from each (one contiguous run)
    for (int64_t t = 0; t < n; t++) {
      const int64_t j = j0 + t;
      const float* k = a.k + a.table[j / a.bs] * a.ks0 + (j % a.bs) * a.ks1;
      for (int64_t h = 0; h < G; h++) sc[h * kAttnKeyBlock + t] = dot_lanes(a.q + h * hd, k + h * hd, hd) * a.scale;
    }
    for (int64_t h = 0; h < G; h++) {
      float* s = sc + h * kAttnKeyBlock;
      float bm = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < n; t++) bm = std::max(bm, s[t]);
      if (bm > m[h]) {
        const float alpha = m[h] == -std::numeric_limits<float>::infinity() ? 0.f : exp_nonpos(m[h] - bm);
        for (int64_t c = 0; c < hd; c++) o[h * hd + c] *= alpha;
        l[h] *= alpha;
        m[h] = bm;
      }
      for (int64_t t = 0; t < n; t++) s[t] = exp_nonpos(s[t] - m[h]);
      for (int64_t t = 0; t < n; t++) l[h] += s[t];
    }
    for (int64_t t = 0; t < n; t++) {
      const int64_t j = j0 + t;
      const float* v = a.v + a.table[j / a.bs] * a.vs0 + (j % a.bs) * a.vs1;
      for (int64_t h = 0; h < G; h++) {
        const float p = sc[h * kAttnKeyBlock + t];
        float* oh = o + h * hd;
        const float* vh = v + h * hd;
        for (int64_t c = 0; c < hd; c++) oh[c] = std::fma(p, vh[c], oh[c]);
      }
    }
  }
  for (int64_t h = 0; h < G; h++) {
    const float inv = 1.f / l[h];
    for (int64_t c = 0; c < hd; c++) a.out[h * hd + c] = o[h * hd + c] * inv;
  }
}

}  // namespace ATTN_ROW_NS
}  // namespace vffn::cpu
#endif
