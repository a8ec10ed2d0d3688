// VersatileFFN's width path on CPU, forward and backward: the virtual experts as one grouped
// GEMM. assignments are counting-sorted by expert; the GEMM gathers its rows from the shared norm
// through Mat::rows; expert e's weights are slices of ff_proj / ff_out at expert_offset(e), never
// copied. P positions, D width, I intermediate, E expert width.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/experts.h"
#include "ffn.h"
#include "pool.h"

namespace vffn::cpu {

namespace {
constexpr int64_t kBlock = 128;  // rows per task: big enough that packing an expert's weights pays
}

void route_topk(int64_t t0, int64_t t1, int64_t N, int64_t K, const float* r, int32_t* experts, float* weights,
                float* router_p) {
  std::vector<uint8_t> taken(static_cast<size_t>(N));
  for (int64_t t = t0; t < t1; t++) {
    const float* rt = r + t * N;
    std::fill(taken.begin(), taken.end(), 0);
    double sum = 0;
    for (int64_t k = 0; k < K; k++) {
      int64_t best = -1;
      for (int64_t j = 0; j < N; j++)
        if (!taken[size_t(j)] && (best < 0 || rt[j] > rt[best])) best = j;
      taken[size_t(best)] = 1;
      experts[t * K + k] = int32_t(best);
      sum += std::exp(double(rt[best]) - rt[experts[t * K]]);
    }
    for (int64_t k = 0; k < K; k++)
      weights[t * K + k] = float(std::exp(double(rt[experts[t * K + k]]) - rt[experts[t * K]]) / sum);
    if (router_p) {
      float* pr = router_p + t * N;
      double s = 0;
      for (int64_t j = 0; j < N; j++) s += std::exp(double(rt[j]) - rt[experts[t * K]]);
      for (int64_t j = 0; j < N; j++) pr[j] = float(std::exp(double(rt[j]) - rt[experts[t * K]]) / s);
    }
  }
}

float count_experts(int64_t T, int64_t N, int64_t K, const int32_t* experts, int32_t* counts, const float* router_p,
                    float balance_weight) {
  std::fill(counts, counts + N, 0);
  for (int64_t i = 0; i < T * K; i++) counts[experts[i]]++;
  // balance loss α·N·Σ_e f_e·P_e, summed over tokens in order (deterministic)
  double aux = 0;
  if (router_p && balance_weight != 0.f) {
    std::vector<double> P(size_t(N), 0.0);
    for (int64_t t = 0; t < T; t++)
      for (int64_t j = 0; j < N; j++) P[size_t(j)] += router_p[t * N + j];
    for (int64_t j = 0; j < N; j++) aux += double(counts[j]) / double(T * K) * P[size_t(j)] / double(T);
    aux *= double(balance_weight) * double(N);
  }
  return float(aux);
}

std::vector<float> router_backward(int64_t T, int64_t N, int64_t K, const int32_t* experts, const float* weights,
                                   const float* dw, const int32_t* counts, const float* router_p, float balance_weight,
                                   float aux_grad) {
  std::vector<float> dr(size_t(T * N), 0.f);
  std::vector<double> dP(static_cast<size_t>(N));
  for (int64_t e = 0; e < N; e++) dP[size_t(e)] = double(aux_grad) * balance_weight * double(N) * counts[e] / double(T * K);
  parallel_for(T, 64, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++) s += double(weights[t * K + k]) * dw[t * K + k];
      for (int64_t k = 0; k < K; k++)
        dr[size_t(t * N + experts[t * K + k])] = float(weights[t * K + k] * (dw[t * K + k] - s));
      if (balance_weight != 0.f) {
        const float* pr = router_p + t * N;
        double pd = 0;
        for (int64_t j = 0; j < N; j++) pd += pr[j] * dP[size_t(j)];
        for (int64_t j = 0; j < N; j++) dr[size_t(t * N + j)] += float(pr[j] * (dP[size_t(j)] - pd) / double(T));
      }
    }
  });
  return dr;
}

WidthPlan width_plan(int64_t T, int64_t N, int64_t K, int64_t D, int64_t I, int64_t E, const int32_t* experts,
                     const uint8_t* active, const int32_t* row_of) {
  WidthPlan w{N, K, D, I, E, {}, std::vector<int32_t>(size_t(N + 1), 0), {}};
  for (int64_t t = 0; t < T; t++)
    if (active[t])
      for (int64_t k = 0; k < K; k++) w.start[size_t(experts[t * K + k] + 1)]++;
  for (int64_t e = 0; e < N; e++) w.start[size_t(e + 1)] += w.start[size_t(e)];
  std::vector<int32_t> next(w.start.begin(), w.start.end() - 1);
  w.assign.resize(size_t(w.start[size_t(N)]));
  w.rows.resize(w.assign.size());
  for (int64_t t = 0; t < T; t++)
    if (active[t])
      for (int64_t k = 0; k < K; k++) {
        int32_t p = next[size_t(experts[t * K + k])]++;
        w.assign[size_t(p)] = int32_t(t * K + k);
        w.rows[size_t(p)] = row_of[t];
      }
  return w;
}

void width_forward(const WidthPlan& w, const float* n, const View& proj_w, const View& out_w, float* h, float* o) {
  int64_t D = w.D, I = w.I, E = w.E;
  struct Task { int64_t e, p0, p1; };
  std::vector<Task> tasks;
  for (int64_t e = 0; e < w.N; e++) {
    // an expert's rows in near-equal blocks of at most kBlock (no small tail block)
    int64_t p0 = w.start[size_t(e)], cnt = w.start[size_t(e + 1)] - p0, nb = (cnt + kBlock - 1) / kBlock;
    for (int64_t b = 0; b < nb; b++) tasks.push_back({e, p0 + cnt * b / nb, p0 + cnt * (b + 1) / nb});
  }
  // largest first, so the dynamic schedule ends with small tasks (each task owns its rows: any order is exact)
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.p1 - a.p0 > b.p1 - b.p0; });
  parallel_tasks(int64_t(tasks.size()), [&](int64_t ti, int) {
    const Task& tk = tasks[size_t(ti)];
    int64_t M = tk.p1 - tk.p0, off = expert_offset(tk.e, w.N, I, E);
    std::vector<float> scratch(h ? 0 : size_t(M * 2 * E)), act(size_t(o ? M * E : 0));
    float* hb = h ? h + tk.p0 * 2 * E : scratch.data();
    Mat A = f32_mat(n, D, false, w.rows.data() + tk.p0);
    gemm(M, E, D, 1.f, A, weight_mat(proj_w, off * proj_w.stride[0], true), 0.f, hb, 2 * E, false);
    gemm(M, E, D, 1.f, A, weight_mat(proj_w, (I + off) * proj_w.stride[0], true), 0.f, hb + E, 2 * E, false);
    if (!o) return;
    // SwiGLU while the tile is in cache, then the down projection of this expert's columns
    swiglu_rows(M, E, hb, 2 * E, act.data(), E, false);
    gemm(M, D, E, 1.f, f32_mat(act.data(), E), weight_mat(out_w, off, true), 0.f, o + tk.p0 * D, D, false);
  });
}

void width_backward(const WidthPlan& w, const float* dy, const float* lambda, const float* weights, const float* n,
                    const float* h, const float* o, const View& proj_w, const View& out_w, float* dproj_w, int64_t lddp,
                    float* dout_w, int64_t lddo, float* dn, float* dw) {
  int64_t D = w.D, I = w.I, E = w.E, K = w.K;
  // experts one after another (each weight slice's gradient is one reduction), GEMMs in parallel
  for (int64_t e = 0; e < w.N; e++) {
    std::vector<int32_t> act;  // positions of tokens whose width path reaches y (λ > 0)
    for (int64_t p = w.start[size_t(e)]; p < w.start[size_t(e + 1)]; p++) {
      int32_t a = w.assign[size_t(p)];
      if (lambda[a / K] != 0.f) act.push_back(int32_t(p));
      else dw[a] = 0.f;
    }
    int64_t M = int64_t(act.size()), off = expert_offset(e, w.N, I, E);
    if (M == 0) continue;
    std::vector<float> dO(size_t(M * D)), hs(size_t(M * 2 * E)), ne(size_t(M * D)), da(size_t(M * E)),
        dh(size_t(M * 2 * E)), dne(size_t(M * D));
    float* a = da.data();  // the activation overwrites da in place
    parallel_for(M, 8, [&](int64_t b, int64_t end, int) {
      for (int64_t i = b; i < end; i++) {
        int64_t p = act[size_t(i)], asg = w.assign[size_t(p)], t = asg / K;
        const float* g = dy + t * D;
        const float* op = o + p * D;
        float lam = lambda[t], s = lam * weights[asg];
        double dot = 0;
        for (int64_t j = 0; j < D; j++) {
          dot += double(g[j]) * op[j];
          dO[size_t(i * D + j)] = s * g[j];
        }
        dw[asg] = float(lam * dot);
        std::memcpy(&hs[size_t(i * 2 * E)], h + p * 2 * E, size_t(2 * E) * sizeof(float));
        std::memcpy(&ne[size_t(i * D)], n + int64_t(w.rows[size_t(p)]) * D, size_t(D) * sizeof(float));
      }
    });
    gemm(M, E, D, 1.f, f32_mat(dO.data(), D), weight_mat(out_w, off, false), 0.f, da.data(), E);
    swiglu_rows_backward(M, E, da.data(), E, hs.data(), 2 * E, dh.data(), 2 * E, a, E);
    gemm(D, E, M, 1.f, f32_mat(dO.data(), D, true), f32_mat(a, E), 1.f, dout_w + off, lddo);
    gemm(E, D, M, 1.f, f32_mat(dh.data(), 2 * E, true), f32_mat(ne.data(), D), 1.f, dproj_w + off * lddp, lddp);
    gemm(E, D, M, 1.f, f32_mat(dh.data() + E, 2 * E, true), f32_mat(ne.data(), D), 1.f, dproj_w + (I + off) * lddp,
         lddp);
    gemm(M, D, E, 1.f, f32_mat(dh.data(), 2 * E), weight_mat(proj_w, off * proj_w.stride[0], false), 0.f, dne.data(), D);
    gemm(M, D, E, 1.f, f32_mat(dh.data() + E, 2 * E), weight_mat(proj_w, (I + off) * proj_w.stride[0], false), 1.f, dne.data(), D);
    // an expert sees each token at most once, so rows of dn are distinct within this loop
    parallel_for(M, 8, [&](int64_t b, int64_t end, int) {
      for (int64_t i = b; i < end; i++) {
        float* d = dn + int64_t(w.rows[size_t(act[size_t(i)])]) * D;
        for (int64_t j = 0; j < D; j++) d[j] += dne[size_t(i * D + j)];
      }
    });
  }
}

}  // namespace vffn::cpu
