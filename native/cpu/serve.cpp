// serving kernels on CPU: writes into a paged KV cache, causal attention over it with per-sequence
// lengths, and sampling that returns only ids. NB blocks of BS rows, D = H*hd columns; B sequences
// of Sq queries; V vocabulary ids.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../core/error.h"
#define ATTN_ROW_NS portable
#include "serve_kernels.h"
#include "gemm.h"
#include "lm.h"
#include "pool.h"

namespace vffn::cpu {

void kv_write(const KvWriteArgs& a) {
  const int64_t NB = a.k_pool.shape[0], BS = a.k_pool.shape[1], D = a.k_pool.shape[2], T = a.k.shape[0];
  const int32_t* slot = a.slots.ptr<int32_t>();
  // every slot is checked before any row is written: a failed op leaves the pool as it was
  for (int64_t t = 0; t < T; t++)
    if (slot[t] < 0 || slot[t] >= NB * BS)
      fail("ERR_ARGUMENT", "slots: slot " + std::to_string(slot[t]) + " at position " + std::to_string(t) +
                               " is outside the pool [0, " + std::to_string(NB * BS) + ")");
  for (int64_t t = 0; t < T; t++) {
    int64_t b = slot[t] / BS, r = slot[t] % BS;
    std::memcpy(a.k_pool.ptr<float>() + b * a.k_pool.stride[0] + r * a.k_pool.stride[1], a.k.ptr<float>() + t * a.k.stride[0],
                size_t(D) * sizeof(float));
    std::memcpy(a.v_pool.ptr<float>() + b * a.v_pool.stride[0] + r * a.v_pool.stride[1], a.v.ptr<float>() + t * a.v.stride[0],
                size_t(D) * sizeof(float));
  }
}

void attn_row_portable(const AttnRow& r) { portable::attn_row(r); }
double exp_sum_portable(const float* x, int64_t n, float mx) { return portable::exp_sum(x, n, mx); }
float row_max_portable(const float* x, int64_t n) { return portable::row_max(x, n); }

namespace {
// the serving kernels follow the GEMM's choice (VFFN_GEMM_KERNEL=portable, or no AVX2 + FMA)
bool want_portable() { return std::string(gemm_kernel_name()) == "portable"; }
}  // namespace

void paged_attention(const PagedAttentionArgs& a) {
  const int64_t B = a.q.shape[0], Sq = a.q.shape[1], H = a.heads, hd = a.q.shape[2] / H;
  const int64_t NB = a.k_pool.shape[0], BS = a.k_pool.shape[1], MB = a.block_table.shape[1];
  const int32_t* lens = a.lens.ptr<int32_t>();
  const int32_t* table = a.block_table.ptr<int32_t>();
  const int64_t lt = a.block_table.stride[0];
  for (int64_t b = 0; b < B; b++) {
    if (lens[b] < Sq || lens[b] > MB * BS)
      fail("ERR_ARGUMENT", "lens: sequence " + std::to_string(b) + " has length " + std::to_string(lens[b]) + ", expected " +
                               std::to_string(Sq) + ".." + std::to_string(MB * BS));
    for (int64_t j = 0; j < (lens[b] + BS - 1) / BS; j++)
      if (table[b * lt + j] < 0 || table[b * lt + j] >= NB)
        fail("ERR_ARGUMENT", "blockTable: block " + std::to_string(table[b * lt + j]) + " of sequence " + std::to_string(b) +
                                 " is outside the pool [0, " + std::to_string(NB) + ")");
  }
  static const AttnRowFn row = [] {
    const AttnRowFn fast = attn_row_avx2();
    return fast && !want_portable() ? fast : attn_row_portable;
  }();
  // one task per (sequence, query, group of heads), each walking its keys once (serve_kernels.h).
  // groups are as wide as leaves every thread two tasks; a head's result does not depend on it
  const int64_t rows = B * Sq, want = 2 * int64_t(threads());
  const int64_t G = std::max<int64_t>(1, std::min(H, H * rows / want));
  const int64_t groups = (H + G - 1) / G;
  parallel_for(rows * groups, 1, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t b = r / (Sq * groups), s = (r / groups) % Sq, h0 = (r % groups) * G;
      AttnRow ar;
      ar.q = a.q.ptr<float>() + b * a.q.stride[0] + s * a.q.stride[1] + h0 * hd;
      ar.k = a.k_pool.ptr<float>() + h0 * hd;
      ar.v = a.v_pool.ptr<float>() + h0 * hd;
      ar.ks0 = a.k_pool.stride[0], ar.ks1 = a.k_pool.stride[1], ar.vs0 = a.v_pool.stride[0], ar.vs1 = a.v_pool.stride[1];
      ar.table = table + b * lt;
      ar.bs = BS, ar.heads = std::min(G, H - h0), ar.hd = hd, ar.keys = lens[b] - Sq + s + 1;
      ar.scale = a.scale;
      ar.out = a.out.ptr<float>() + b * a.out.stride[0] + s * a.out.stride[1] + h0 * hd;
      row(ar);
    }
  });
}

namespace {
// the id of one row by SampleArgs' rule; xmax is the row's largest logit that is not NaN. each
// kept id's weight e^(z - max z) is computed once (w, by id) and read by every sum over the ids,
// which keep their orders, so the sums are those of computing it at each use.
int32_t sample_row(const float* x, int64_t V, float xmax, double temp, int64_t top_k, double top_p, double u,
                   std::vector<int32_t>& ids, std::vector<double>& w) {
  if (temp == 0.0) {
    // the first id of the largest logit, as a scan keeping x[j] > x[best] finds it: a NaN at id 0
    // is never beaten, and NaNs after it are never taken
    if (std::isnan(x[0])) return 0;
    for (int64_t j = 0; j < V; j++)
      if (x[j] == xmax) return int32_t(j);
    return 0;
  }
  const double inv_t = 1.0 / temp;
  auto z = [&](int32_t j) { return double(x[j]) * inv_t; };
  auto before = [&](int32_t i, int32_t j) { return z(i) > z(j) || (z(i) == z(j) && i < j); };  // descending z, then id
  size_t kept = size_t(V);
  double mx = -std::numeric_limits<double>::infinity();
  if (top_k > 0 && top_k < V) {
    // the top_k first ids in that order, in one pass: a heap whose top is the last one kept.
    // ids come in increasing order, so one that ties the top's z comes after it and is skipped
    ids.resize(size_t(top_k));
    std::iota(ids.begin(), ids.end(), 0);
    std::make_heap(ids.begin(), ids.end(), before);
    for (int64_t j = top_k; j < V; j++) {
      if (!(z(int32_t(j)) > z(ids.front()))) continue;
      std::pop_heap(ids.begin(), ids.end(), before);
      ids.back() = int32_t(j);
      std::push_heap(ids.begin(), ids.end(), before);
    }
    kept = size_t(top_k);
    for (size_t i = 0; i < kept; i++) mx = std::max(mx, z(ids[i]));
  } else {
    ids.resize(size_t(V));
    std::iota(ids.begin(), ids.end(), 0);
    // x -> x / t is increasing, so the largest z is that of the largest logit (NaNs skipped alike)
    mx = double(xmax) * inv_t;
  }
  w.resize(size_t(V));
  for (size_t i = 0; i < kept; i++) w[size_t(ids[i])] = std::exp(z(ids[i]) - mx);
  if (top_p < 1.0) {
    std::sort(ids.begin(), ids.begin() + std::ptrdiff_t(kept), before);
    double total = 0.0;
    for (size_t i = 0; i < kept; i++) total += w[size_t(ids[i])];
    double run = 0.0;
    size_t n = 0;
    while (n < kept) {
      run += w[size_t(ids[n])];
      n++;
      if (run >= top_p * total) break;
    }
    kept = n;
  }
  // ascending ids (already so when neither top-k nor top-p reordered them)
  if (kept < size_t(V) || top_p < 1.0) std::sort(ids.begin(), ids.begin() + std::ptrdiff_t(kept));
  double total = 0.0;
  for (size_t i = 0; i < kept; i++) total += w[size_t(ids[i])];
  const double r = u * total;
  double run = 0.0;
  for (size_t i = 0; i < kept; i++) {
    run += w[size_t(ids[i])];
    if (run > r) return ids[i];
  }
  return ids[kept - 1];
}
}  // namespace

void sample(const SampleArgs& a) {
  const int64_t B = a.logits.shape[0], V = a.logits.shape[1];
  for (int64_t b = 0; b < B; b++) {
    const float* p = a.params.ptr<float>() + b * a.params.stride[0];
    const double temp = p[0], top_k = p[1], top_p = p[2], u = p[3];
    if (!(temp >= 0.0) || !std::isfinite(temp) || !(top_k >= 0.0) || top_k != std::floor(top_k) || !(top_p > 0.0 && top_p <= 1.0) ||
        !(u >= 0.0 && u < 1.0))
      fail("ERR_ARGUMENT", "params: row " + std::to_string(b) +
                               " needs temperature >= 0, an integer top_k >= 0, top_p in (0, 1] and u in [0, 1)");
  }
  static const ExpSumFn exp_sum = [] {
    const ExpSumFn fast = exp_sum_avx2();
    return fast && !want_portable() ? fast : exp_sum_portable;
  }();
  static const RowMaxFn row_max = [] {
    const RowMaxFn fast = row_max_avx2();
    return fast && !want_portable() ? fast : row_max_portable;
  }();
  parallel_for(B, 1, [&](int64_t b0, int64_t b1, int) {
    std::vector<int32_t> ids;
    std::vector<double> w;
    for (int64_t b = b0; b < b1; b++) {
      const float* x = a.logits.ptr<float>() + b * a.logits.stride[0];
      const float* p = a.params.ptr<float>() + b * a.params.stride[0];
      // (a NaN logit is skipped by the max and makes the log-probability's sum NaN)
      const float mx = row_max(x, V);
      const int32_t id = sample_row(x, V, mx, p[0], int64_t(p[1]), p[2], p[3], ids, w);
      // log p(id) under the untempered softmax: x[id] - max - log(sum of e^(x - max))
      const double sum = exp_sum(x, V, mx);
      a.ids.ptr<int32_t>()[b * a.ids.stride[0]] = id;
      a.logprobs.ptr<float>()[b * a.logprobs.stride[0]] = float(double(x[id]) - double(mx) - std::log(sum));
    }
  });
}

}  // namespace vffn::cpu
