// VersatileFFN on CPU, forward and backward (SPEC.md): routing, the loop head, the depth path in
// place with per-token early exit, the fusion λ. the width path is in versatile_width.cpp.
// T tokens, D width, I intermediate, N experts, K per token, E expert width, L loops.
// depth order: tokens sorted by loop count, descending, so loop j runs over rows [0, m_j).
#include <cmath>
#include <cstring>

#include "../core/philox.h"
#include "ffn.h"
#include "pool.h"

namespace vffn::cpu {

namespace {

struct Sizes {
  int64_t T, D, I, N, K, L, E;
};

template <class A>
Sizes sizes_of(const A& a) {
  return {a.x.rows(), a.x.cols(), a.out_w.cols(), a.n_experts, a.top_k, a.max_depth, a.expert_hidden};
}

// Gumbel noise of token t, loop logit j (SPEC.md): counter (t, j/4, 0, 0), word j mod 4
inline float gumbel(uint64_t seed, int64_t t, int64_t j) {
  U32x4 r = philox4x32_10(uint32_t(t), uint32_t(j / 4), 0, 0, seed);
  return philox_gumbel(r.v[j % 4]);
}

// counting sort by loop count, descending, stable; m[j] = tokens with at least j loops (m[L+1] = 0)
void depth_order(int64_t T, int64_t L, const int32_t* loops, int32_t* order, std::vector<int32_t>& pos,
                 std::vector<int64_t>& m) {
  m.assign(size_t(L + 2), 0);
  for (int64_t t = 0; t < T; t++) m[size_t(loops[t])]++;
  for (int64_t j = L - 1; j >= 1; j--) m[size_t(j)] += m[size_t(j + 1)];
  std::vector<int64_t> next(size_t(L + 2));
  for (int64_t j = 1; j <= L; j++) next[size_t(j)] = m[size_t(j + 1)];
  pos.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; t++) {
    int64_t s = next[size_t(loops[t])]++;
    order[s] = int32_t(t);
    pos[size_t(t)] = int32_t(s);
  }
}

std::vector<float> logits(const View& x, const View& w) {
  int64_t T = x.rows(), D = x.cols(), R = w.rows();
  std::vector<float> out(size_t(T * R));
  gemm(T, R, D, 1.f, f32_mat(x.ptr<float>(), D), weight_mat(w, 0, true), 0.f, out.data(), R);
  return out;
}

}  // namespace

void versatile_forward(const VersatileForwardArgs& a) {
  auto [T, D, I, N, K, L, E] = sizes_of(a);
  const bool train = a.train != 0;
  const VersatileSaved& sv = a.saved;
  const float* x = a.x.ptr<float>();
  std::vector<float> r = logits(a.x, a.router_w), z = logits(a.x, a.depth_w), nw = load_vector(a.norm_w);
  int32_t* experts = a.experts.ptr<int32_t>();
  float* weights = a.weights.ptr<float>();
  int32_t* loops = a.loops.ptr<int32_t>();
  float* lambda = a.lambda.ptr<float>();

  // router: top-K (ties to the lower index), softmax over the chosen K; loop head: argmax
  float* router_p = train ? sv.router_p.ptr<float>() : nullptr;
  parallel_for(T, 64, [&](int64_t b, int64_t e, int) {
    route_topk(b, e, N, K, r.data(), experts, weights, router_p);
    for (int64_t t = b; t < e; t++) {
      // the chosen loop: argmax of z + g (g = 0 at inference or without noise), ties to the lower index
      float* zt = &z[size_t(t * L)];
      if (train && a.noise)
        for (int64_t j = 0; j < L; j++) zt[j] += gumbel(a.seed, t, j);
      int64_t c = 0;
      for (int64_t j = 1; j < L; j++)
        if (zt[j] > zt[c]) c = j;
      loops[t] = int32_t(c + 1);
      lambda[t] = float(L - (c + 1)) / float(L);
      if (train) {
        float* p = sv.depth_p.ptr<float>() + t * L;
        double s = 0;
        for (int64_t j = 0; j < L; j++) s += std::exp((double(zt[j]) - zt[c]) / a.tau);
        for (int64_t j = 0; j < L; j++) p[j] = float(std::exp((double(zt[j]) - zt[c]) / a.tau) / s);
      }
    }
  });
  const float aux = count_experts(T, N, K, experts, a.expert_counts.ptr<int32_t>(), router_p, a.balance_weight);
  if (train) a.aux.ptr<float>()[0] = aux;

  // sorted rows, one norm shared by the width path and the first loop
  std::vector<int32_t> order_buf, pos;
  std::vector<int64_t> m;
  int32_t* order = train ? sv.order.ptr<int32_t>() : (order_buf.resize(static_cast<size_t>(T)), order_buf.data());
  depth_order(T, L, loops, order, pos, m);
  std::vector<float> xbuf, n(size_t(T * D)), rbuf;
  float* X = train ? sv.xs.ptr<float>() : (xbuf.resize(size_t(T * D)), xbuf.data());
  parallel_for(T, 64, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; s++) std::memcpy(X + s * D, x + int64_t(order[s]) * D, size_t(D) * sizeof(float));
  });
  float* rstd0 = train ? sv.rstd.ptr<float>() : (rbuf.resize(static_cast<size_t>(T)), rbuf.data());
  rmsnorm_rows(T, D, X, D, nw.data(), a.eps, n.data(), D, rstd0);

  // width path: every token in training, tokens with λ > 0 at inference
  std::vector<uint8_t> active(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; t++) active[size_t(t)] = train || loops[t] < L;
  WidthPlan wp = width_plan(T, N, K, D, I, E, experts, active.data(), pos.data());
  int64_t P = wp.positions();
  std::vector<float> obuf, xwbuf;
  float* wo = train ? sv.width_o.ptr<float>() : (obuf.resize(size_t(P * D)), obuf.data());
  float* xw = train ? sv.x_width.ptr<float>() : (xwbuf.resize(size_t(T * D)), xwbuf.data());
  // a bfloat16 saved width_h (bf16-mixed) is computed in float32 scratch and rounded once; none is
  // saved at inference or with recompute ('ffn': data null, the backward computes it again)
  bool wh_keep = train && sv.width_h.data, wh16 = wh_keep && sv.width_h.dtype == BF16;
  std::vector<float> whbuf(wh16 ? size_t(P * 2 * E) : 0);
  width_forward(wp, n.data(), a.proj_w, a.out_w, wh16 ? whbuf.data() : wh_keep ? sv.width_h.ptr<float>() : nullptr, wo);
  if (wh16) save_values(whbuf.data(), sv.width_h, 0, P * 2 * E);
  if (train) {
    std::memcpy(sv.assign.ptr<int32_t>(), wp.assign.data(), size_t(P) * sizeof(int32_t));
    std::memcpy(sv.expert_start.ptr<int32_t>(), wp.start.data(), size_t(N + 1) * sizeof(int32_t));
  }
  std::vector<int32_t> slot(size_t(T * K), -1);  // assignment -> position
  for (int64_t p = 0; p < P; p++) slot[size_t(wp.assign[size_t(p)])] = int32_t(p);
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      if (!active[size_t(t)]) continue;
      float* o = xw + t * D;
      std::memcpy(o, x + t * D, size_t(D) * sizeof(float));
      for (int64_t k = 0; k < K; k++) {
        const float* f = wo + int64_t(slot[size_t(t * K + k)]) * D;
        float wk = weights[t * K + k];
        for (int64_t j = 0; j < D; j++) o[j] += wk * f[j];
      }
    }
  });

  // depth path: training runs every loop over all rows (backward needs every x^(j)); inference
  // runs loop j over the prefix of tokens that still have loops to go, in place
  std::vector<float> act, hbuf;
  for (int64_t j = 1; j <= L; j++) {
    int64_t M = train ? T : m[size_t(j)];
    if (M == 0) break;
    float* xin = train ? X + (j - 1) * T * D : X;
    float* xout = train ? X + j * T * D : X;
    float* rs = train ? sv.rstd.ptr<float>() + (j - 1) * T : rstd0;
    // a bfloat16 saved h (bf16-mixed) is computed in float32 scratch and rounded once; with
    // recompute (data null) nothing is saved
    bool keep = train && sv.h.data, direct = keep && sv.h.dtype == F32;
    float* h = direct ? sv.h.ptr<float>() + (j - 1) * T * 2 * I : (hbuf.resize(size_t(M * 2 * I)), hbuf.data());
    act.resize(size_t(M * I));
    if (j > 1) rmsnorm_rows(M, D, xin, D, nw.data(), a.eps, n.data(), D, rs);
    if (xout != xin) std::memcpy(xout, xin, size_t(M * D) * sizeof(float));
    ffn_rows_forward(M, D, I, n.data(), xout, a.proj_w, a.out_w, h, act.data());
    if (keep && !direct) save_values(h, sv.h, (j - 1) * T * 2 * I, M * 2 * I);
  }

  // fusion: y = (1 − λ)·x_depth + λ·x_width
  float* y = a.y.ptr<float>();
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      const float* xd = (train ? X + int64_t(loops[t]) * T * D : X) + int64_t(pos[size_t(t)]) * D;
      float lam = lambda[t];
      float* yt = y + t * D;
      if (lam == 0.f) std::memcpy(yt, xd, size_t(D) * sizeof(float));
      else
        for (int64_t j = 0; j < D; j++) yt[j] = (1.f - lam) * xd[j] + lam * xw[t * D + j];
    }
  });
}

void versatile_backward(const VersatileBackwardArgs& a) {
  auto [T, D, I, N, K, L, E] = sizes_of(a);
  const VersatileSaved& sv = a.saved;
  const float* x = a.x.ptr<float>();
  const float* G = a.dy.ptr<float>();
  const float* X = sv.xs.ptr<float>();
  const float* xw = sv.x_width.ptr<float>();
  const int32_t* loops = a.loops.ptr<int32_t>();
  const int32_t* order = sv.order.ptr<int32_t>();
  const float* lambda = a.lambda.ptr<float>();
  const float* weights = a.weights.ptr<float>();
  std::vector<float> nw = load_vector(a.norm_w);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t s = 0; s < T; s++) pos[size_t(order[s])] = int32_t(s);
  std::vector<int64_t> m(size_t(L + 2), 0);
  for (int64_t t = 0; t < T; t++) m[size_t(loops[t])]++;
  for (int64_t j = L - 1; j >= 1; j--) m[size_t(j)] += m[size_t(j + 1)];

  // loop head, straight-through: ∂/∂p_j = (1 − λ)⟨G, x^(j)⟩ − (j/L)⟨G, x_width − x_depth⟩, then the softmax
  std::vector<float> dz(size_t(T * L));
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    std::vector<double> dp(static_cast<size_t>(L));
    for (int64_t t = b; t < e; t++) {
      const float* g = G + t * D;
      int64_t s = pos[size_t(t)];
      const float* xd = X + (int64_t(loops[t]) * T + s) * D;
      double dl = 0;
      for (int64_t i = 0; i < D; i++) dl += double(g[i]) * (double(xw[t * D + i]) - xd[i]);
      const float* p = sv.depth_p.ptr<float>() + t * L;
      double pdp = 0;
      for (int64_t j = 1; j <= L; j++) {
        const float* xj = X + (j * T + s) * D;
        double dot = 0;
        for (int64_t i = 0; i < D; i++) dot += double(g[i]) * xj[i];
        dp[size_t(j - 1)] = (1.0 - lambda[t]) * dot - double(j) / double(L) * dl;
        pdp += p[j - 1] * dp[size_t(j - 1)];
      }
      for (int64_t j = 0; j < L; j++) dz[size_t(t * L + j)] = float(p[j] * (dp[size_t(j)] - pdp) / a.tau);
    }
  });

  // width path: its norm gradient lands on the first loop's norm (dn, sorted rows)
  WidthPlan wp{N, K, D, I, E, {}, {}, {}};
  int64_t P = T * K;
  wp.assign.assign(sv.assign.ptr<int32_t>(), sv.assign.ptr<int32_t>() + P);
  wp.start.assign(sv.expert_start.ptr<int32_t>(), sv.expert_start.ptr<int32_t>() + N + 1);
  wp.rows.resize(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; p++) wp.rows[size_t(p)] = pos[size_t(wp.assign[size_t(p)] / K)];
  std::vector<float> n(size_t(T * D)), dn(size_t(T * D), 0.f), dw(size_t(T * K));
  const float* rstd0 = sv.rstd.ptr<float>();
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t s = b; s < e; s++)
      for (int64_t i = 0; i < D; i++) n[size_t(s * D + i)] = X[s * D + i] * rstd0[s] * nw[size_t(i)];
  });
  float* dproj = a.dproj_w.ptr<float>();
  float* dout = a.dout_w.ptr<float>();
  // the width pre-activations: widened from bfloat16 (bf16-mixed), or with recompute again in the
  // forward's tasks (the same bits) and rounded as the forward would have saved them
  std::vector<float> whbuf;
  const float* wh = sv.width_h.data && sv.width_h.dtype == F32 ? sv.width_h.ptr<float>()
                                                               : (whbuf.resize(size_t(P * 2 * E)), whbuf.data());
  if (!sv.width_h.data) {
    width_forward(wp, n.data(), a.proj_w, a.out_w, whbuf.data(), nullptr);
    round_as_saved(sv.width_h, whbuf.data(), P * 2 * E);
  } else if (sv.width_h.dtype != F32) {
    load_values(sv.width_h, 0, P * 2 * E, whbuf.data());
  }
  width_backward(wp, G, lambda, weights, n.data(), wh, sv.width_o.ptr<float>(), a.proj_w,
                 a.out_w, dproj, a.dproj_w.ld(), dout, a.dout_w.ld(), dn.data(), dw.data());

  // router: softmax over the chosen K, plus the balance loss through P_e only
  std::vector<float> dr = router_backward(T, N, K, a.experts.ptr<int32_t>(), weights, dw.data(), a.expert_counts.ptr<int32_t>(),
                                          sv.router_p.ptr<float>(), a.balance_weight, a.aux_grad);

  // depth path backward, in place over shrinking prefixes in reverse: a token enters at its own depth
  std::vector<float> dcur(size_t(T * D)), hbuf;
  float* dnorm = a.dnorm_w.ptr<float>();
  for (int64_t j = L; j >= 1; j--) {
    // loop j's pre-activations over the rows that reach it: widened from bfloat16 (bf16-mixed), or
    // with recompute again from the loop's saved input, rounded as the forward would have saved them
    const float* hj = sv.h.data && sv.h.dtype == F32 ? sv.h.ptr<float>() + (j - 1) * T * 2 * I : nullptr;
    if (!hj && m[size_t(j)] > 0) {
      if (sv.h.data) {
        hbuf.resize(size_t(m[size_t(j)] * 2 * I));
        load_values(sv.h, (j - 1) * T * 2 * I, m[size_t(j)] * 2 * I, hbuf.data());
      } else {
        int64_t R = recompute_rows(m[size_t(j)], T);
        hbuf.resize(size_t(R * 2 * I));
        ffn_rows_preact(R, D, I, X + (j - 1) * T * D, sv.rstd.ptr<float>() + (j - 1) * T, nw.data(), a.proj_w,
                        hbuf.data());
        round_as_saved(sv.h, hbuf.data(), m[size_t(j)] * 2 * I);
      }
      hj = hbuf.data();
    }
    for (int64_t s = m[size_t(j + 1)]; s < m[size_t(j)]; s++) {
      int64_t t = order[s];
      float c = 1.f - lambda[t];
      for (int64_t i = 0; i < D; i++) dcur[size_t(s * D + i)] = c * G[t * D + i];
    }
    ffn_rows_backward(m[size_t(j)], D, I, dcur.data(), X + (j - 1) * T * D, sv.rstd.ptr<float>() + (j - 1) * T,
                      hj, nw.data(), a.proj_w, a.out_w, dnorm, dproj,
                      a.dproj_w.ld(), dout, a.dout_w.ld(), j == 1 ? dn.data() : nullptr);
  }

  // dx: depth path, the width path's residual, the two heads
  float* dx = a.dx.ptr<float>();
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      const float* dc = &dcur[size_t(pos[size_t(t)]) * size_t(D)];
      for (int64_t i = 0; i < D; i++) dx[t * D + i] = dc[i] + lambda[t] * G[t * D + i];
    }
  });
  gemm(T, D, N, 1.f, f32_mat(dr.data(), N), weight_mat(a.router_w, 0, false), 1.f, dx, D);
  gemm(T, D, L, 1.f, f32_mat(dz.data(), L), weight_mat(a.depth_w, 0, false), 1.f, dx, D);
  gemm(N, D, T, 1.f, f32_mat(dr.data(), N, true), f32_mat(x, D), 1.f, a.drouter_w.ptr<float>(), a.drouter_w.ld());
  gemm(L, D, T, 1.f, f32_mat(dz.data(), L, true), f32_mat(x, D), 1.f, a.ddepth_w.ptr<float>(), a.ddepth_w.ld());
}

}  // namespace vffn::cpu
