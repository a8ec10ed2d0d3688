// the mixture-of-experts FFN on CPU, forward and backward (SPEC.md): VersatileFFN's router and
// balance loss over N separate experts, run as the width path's grouped GEMM (versatile_width.cpp)
// with I = N·E, so expert e's weights are the slice at e·E and no two experts share a weight.
// T tokens, D width, I = N·E intermediate, N experts, K per token, E expert width.
#include <cmath>
#include <cstring>

#include "ffn.h"
#include "pool.h"

namespace vffn::cpu {

namespace {

struct Sizes {
  int64_t T, D, I, N, K, E;
};

template <class A>
Sizes sizes_of(const A& a) {
  return {a.x.rows(), a.x.cols(), a.out_w.cols(), a.n_experts, a.top_k, a.expert_hidden};
}

}  // namespace

void moe_forward(const MoeForwardArgs& a) {
  auto [T, D, I, N, K, E] = sizes_of(a);
  const bool train = a.train != 0;
  const MoeSaved& sv = a.saved;
  const float* x = a.x.ptr<float>();
  std::vector<float> r(size_t(T * N)), nw = load_vector(a.norm_w);
  gemm(T, N, D, 1.f, f32_mat(x, D), weight_mat(a.router_w, 0, true), 0.f, r.data(), N);
  int32_t* experts = a.experts.ptr<int32_t>();
  float* weights = a.weights.ptr<float>();

  // top-K (ties to the lower index), softmax over the chosen K; all N for the balance loss
  float* router_p = train ? sv.router_p.ptr<float>() : nullptr;
  parallel_for(T, 64, [&](int64_t b, int64_t e, int) { route_topk(b, e, N, K, r.data(), experts, weights, router_p); });
  const float aux = count_experts(T, N, K, experts, a.expert_counts.ptr<int32_t>(), router_p, a.balance_weight);
  if (train) a.aux.ptr<float>()[0] = aux;

  // the norm once per token, then every (token, slot) pair through its expert as one grouped GEMM
  std::vector<float> n(size_t(T * D)), rbuf;
  float* rstd = train ? sv.rstd.ptr<float>() : (rbuf.resize(static_cast<size_t>(T)), rbuf.data());
  rmsnorm_rows(T, D, x, D, nw.data(), a.eps, n.data(), D, rstd);
  std::vector<uint8_t> active(static_cast<size_t>(T), 1);
  std::vector<int32_t> row_of(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; t++) row_of[size_t(t)] = int32_t(t);
  WidthPlan wp = width_plan(T, N, K, D, I, E, experts, active.data(), row_of.data());
  int64_t P = wp.positions();
  std::vector<float> obuf;
  float* wo = train ? sv.width_o.ptr<float>() : (obuf.resize(size_t(P * D)), obuf.data());
  // no saved width_h in training: recompute ('ffn'), the backward computes it again
  width_forward(wp, n.data(), a.proj_w, a.out_w, train && sv.width_h.data ? sv.width_h.ptr<float>() : nullptr, wo);
  if (train) {
    std::memcpy(sv.assign.ptr<int32_t>(), wp.assign.data(), size_t(P) * sizeof(int32_t));
    std::memcpy(sv.expert_start.ptr<int32_t>(), wp.start.data(), size_t(N + 1) * sizeof(int32_t));
  }
  std::vector<int32_t> slot(size_t(T * K));  // assignment -> position
  for (int64_t p = 0; p < P; p++) slot[size_t(wp.assign[size_t(p)])] = int32_t(p);
  float* y = a.y.ptr<float>();
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      float* o = y + t * D;
      std::memcpy(o, x + t * D, size_t(D) * sizeof(float));
      for (int64_t k = 0; k < K; k++) {
        const float* f = wo + int64_t(slot[size_t(t * K + k)]) * D;
        float wk = weights[t * K + k];
        for (int64_t j = 0; j < D; j++) o[j] += wk * f[j];
      }
    }
  });
}

void moe_backward(const MoeBackwardArgs& a) {
  auto [T, D, I, N, K, E] = sizes_of(a);
  const MoeSaved& sv = a.saved;
  const float* x = a.x.ptr<float>();
  const float* G = a.dy.ptr<float>();
  const float* weights = a.weights.ptr<float>();
  const float* rstd = sv.rstd.ptr<float>();
  std::vector<float> nw = load_vector(a.norm_w);

  // experts: the width backward with λ = 1 for every token (y = x + Σ_k w_k·FFN_{e_k}(x))
  WidthPlan wp{N, K, D, I, E, {}, {}, {}};
  int64_t P = T * K;
  wp.assign.assign(sv.assign.ptr<int32_t>(), sv.assign.ptr<int32_t>() + P);
  wp.start.assign(sv.expert_start.ptr<int32_t>(), sv.expert_start.ptr<int32_t>() + N + 1);
  wp.rows.resize(static_cast<size_t>(P));
  for (int64_t p = 0; p < P; p++) wp.rows[size_t(p)] = wp.assign[size_t(p)] / int32_t(K);
  std::vector<float> n(size_t(T * D)), dn(size_t(T * D), 0.f), dw(size_t(T * K)), ones(size_t(T), 1.f);
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++)
      for (int64_t i = 0; i < D; i++) n[size_t(t * D + i)] = x[t * D + i] * rstd[t] * nw[size_t(i)];
  });
  // recompute: the expert pre-activations again, in the forward's tasks (the same bits)
  std::vector<float> whbuf;
  if (!sv.width_h.data) {
    whbuf.resize(size_t(P * 2 * E));
    width_forward(wp, n.data(), a.proj_w, a.out_w, whbuf.data(), nullptr);
    round_as_saved(sv.width_h, whbuf.data(), P * 2 * E);
  }
  const float* wh = sv.width_h.data ? sv.width_h.ptr<float>() : whbuf.data();
  width_backward(wp, G, ones.data(), weights, n.data(), wh, sv.width_o.ptr<float>(), a.proj_w,
                 a.out_w, a.dproj_w.ptr<float>(), a.dproj_w.ld(), a.dout_w.ptr<float>(), a.dout_w.ld(), dn.data(),
                 dw.data());

  // router: softmax over the chosen K, plus the balance loss through P_e only
  std::vector<float> dr = router_backward(T, N, K, a.experts.ptr<int32_t>(), weights, dw.data(), a.expert_counts.ptr<int32_t>(),
                                          sv.router_p.ptr<float>(), a.balance_weight, a.aux_grad);

  // dx = dy (the residual) + the norm's backward + the router's
  float* dx = a.dx.ptr<float>();
  rmsnorm_rows_backward(T, D, dn.data(), D, x, D, nw.data(), rstd, dx, D, a.dnorm_w.ptr<float>());
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b * D; i < e * D; i++) dx[i] += G[i];
  });
  gemm(T, D, N, 1.f, f32_mat(dr.data(), N), weight_mat(a.router_w, 0, false), 1.f, dx, D);
  gemm(N, D, T, 1.f, f32_mat(dr.data(), N, true), f32_mat(x, D), 1.f, a.drouter_w.ptr<float>(), a.drouter_w.ld());
}

}  // namespace vffn::cpu
