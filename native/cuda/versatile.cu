// VersatileFFN on CUDA, forward and backward (SPEC.md), with no host synchronisation inside:
// routing and both orderings happen on the device, and every launch covers an upper bound
// (T rows, T·K positions, N groups) whose live part blocks read from device memory.
// width path: one grouped GEMM pair over the expert-sorted positions; the first gathers its rows
// of the shared norm in the tile loads and applies SwiGLU in its epilogue, the second stores
// FFN_e(x) per position; each token then gathers its own K positions in k order (no atomics:
// the same bits on every run).
// depth path: tokens sorted by loop count, descending; loop j runs over the prefix [0, m[j]) in
// place at inference; training runs every loop for every token (backward needs all x^(j)) and
// backward walks the prefixes in reverse.
#include <climits>

#include "versatile.cuh"

namespace vffn::cuda {

namespace {

// training: x_width[t] = x[t] + Σ_k w_tk·o[slot(t,k)]; y = (1 − λ)·x_depth + λ·x_width
__global__ void combine_kernel(int64_t T, int D, int K, const float* x, const float* wo, const int32_t* slot,
                               const float* weights, const float* X, const int32_t* loops, const int32_t* pos,
                               const float* lambda, float* xw, float* y) {
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, j = i - t * D;
    float v = x[i];
    for (int k = 0; k < K; k++) v += weights[t * K + k] * wo[int64_t(slot[t * K + k]) * D + j];
    xw[i] = v;
    const float lam = lambda[t], xd = X[(int64_t(loops[t]) * T + pos[t]) * D + j];
    y[i] = lam == 0.f ? xd : (1.f - lam) * xd + lam * v;
  }
}

// inference: y = (1 − λ)·x_depth + λ·x + Σ_k λ·w_k·o[slot(t,k)] (scale = λ·w); tokens at depth L
// (λ = 0) have no width positions
__global__ void fuse_kernel(int64_t T, int D, int K, const float* x, const float* X, const int32_t* pos,
                            const float* lambda, const float* wo, const int32_t* slot, const float* scale, float* y) {
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, j = i - t * D;
    const float lam = lambda[t], xd = X[int64_t(pos[t]) * D + j];
    if (lam == 0.f) {
      y[i] = xd;
      continue;
    }
    float v = (1.f - lam) * xd + lam * x[i];
    for (int k = 0; k < K; k++) {
      const int64_t p = slot[t * K + k];
      v += scale[p] * wo[p * D + j];
    }
    y[i] = v;
  }
}

// dn[s] = Σ_k part[slot(order[s], k)], k in order: the width path's norm gradient by sorted row
__global__ void gather_positions_kernel(int64_t T, int D, int K, const int32_t* order, const int32_t* slot,
                                        const float* part, float* dn) {
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = i / D, j = i - s * D, t = order[s];
    float v = 0.f;
    for (int k = 0; k < K; k++) v += part[int64_t(slot[t * K + k]) * D + j];
    dn[i] = v;
  }
}

// straight-through loop head, one warp per token: ∂/∂p_j = (1 − λ)⟨G, x^(j)⟩ − (j/L)⟨G, x_width − x_depth⟩,
// then the softmax with temperature τ. dz doubles as the store of ∂/∂p before it is overwritten.
__global__ void depth_grad_kernel(int64_t T, int D, int L, const float* G, const float* X, const float* xw,
                                  const int32_t* loops, const int32_t* pos, const float* lambda, const float* p,
                                  float tau, float* dz) {
  const int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (t >= T) return;
  const float* g = G + t * D;
  const int64_t s = pos[t];
  const float* xd = X + (int64_t(loops[t]) * T + s) * D;
  float dl = 0.f;
  for (int i = lane; i < D; i += 32) dl += g[i] * (xw[t * D + i] - xd[i]);
  dl = warp_sum(dl);
  float pdp = 0.f;
  for (int j = 1; j <= L; j++) {
    const float* xj = X + (int64_t(j) * T + s) * D;
    float dot = 0.f;
    for (int i = lane; i < D; i += 32) dot += g[i] * xj[i];
    dot = warp_sum(dot);
    const float dp = (1.f - lambda[t]) * dot - float(j) / float(L) * dl;
    pdp += p[t * L + j - 1] * dp;
    if (lane == 0) dz[t * L + j - 1] = dp;
  }
  __syncwarp();
  if (lane == 0)
    for (int j = 0; j < L; j++) dz[t * L + j] = p[t * L + j] * (dz[t * L + j] - pdp) / tau;
}

// one warp per position p (assignment a, token t): dO[p] = λ_t·w_a·G[t], dw[a] = λ_t·⟨G[t], o[p]⟩
__global__ void width_out_grad_kernel(int64_t P, int D, int K, const int32_t* assign, const float* G, const float* wo,
                                      const float* lambda, const float* weights, float* dO, float* dw) {
  const int64_t p = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (p >= P) return;
  const int64_t a = assign[p], t = a / K;
  const float lam = lambda[t], sc = lam * weights[a];
  float dot = 0.f;
  for (int i = lane; i < D; i += 32) {
    const float g = G[t * D + i];
    dot += g * wo[p * D + i];
    dO[p * D + i] = sc * g;
  }
  dot = warp_sum(dot);
  if (lane == 0) dw[a] = lam * dot;
}

// router logits: softmax over the chosen K, plus the balance loss through P_e (one thread per token)
__global__ void router_grad_kernel(int64_t T, int N, int K, const int32_t* experts, const float* weights,
                                   const float* dw, const float* router_p, const int32_t* counts, float alpha,
                                   float aux_grad, float* dr) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= T) return;
  float* d = dr + t * N;
  for (int j = 0; j < N; j++) d[j] = 0.f;
  double s = 0;
  for (int k = 0; k < K; k++) s += double(weights[t * K + k]) * dw[t * K + k];
  for (int k = 0; k < K; k++) d[experts[t * K + k]] = float(weights[t * K + k] * (dw[t * K + k] - s));
  if (alpha == 0.f) return;
  const float* pr = router_p + t * N;
  const double scale = double(aux_grad) * alpha * double(N) / double(T * K);
  double pd = 0;
  for (int j = 0; j < N; j++) pd += pr[j] * scale * counts[j];
  for (int j = 0; j < N; j++) d[j] += float(pr[j] * (scale * counts[j] - pd) / double(T));
}

// loop j's backward starts the tokens whose chosen depth is j: dcur[s] = (1 − λ)·G[t]
__global__ void depth_enter_kernel(int64_t T, int D, int j, const int32_t* order, const int32_t* loops,
                                   const float* lambda, const float* G, float* dcur) {
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = i / D, c = i - s * D, t = order[s];
    if (loops[t] == j) dcur[i] = (1.f - lambda[t]) * G[t * D + c];
  }
}

// dx[t] = dcur[pos t] + λ_t·G[t] (the width path's residual)
__global__ void dx_kernel(int64_t T, int D, const float* dcur, const int32_t* pos, const float* lambda, const float* G,
                          float* dx) {
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, c = i - t * D;
    dx[i] = dcur[int64_t(pos[t]) * D + c] + lambda[t] * G[i];
  }
}

unsigned grid_for(int64_t n) { return blocks_for(n, 256, 1u << 20); }
unsigned warps_grid(int64_t warps) { return blocks_for(warps * 32, 256, 1u << 30); }

template <class A>
VSizes sizes_of(const A& a) {
  return {a.x.rows(), a.x.cols(), a.out_w.cols(), a.n_experts, a.top_k, a.max_depth, a.expert_hidden};
}

template <class A>
void check_common(const A& a, const VSizes& s) {
  require(a.x.dtype == F32 && a.x.ndim == 2 && a.x.contiguous(), "versatile: x must be a contiguous float32 [T, D]");
  require_float(a.norm_w, "ff_norm.weight", 1);
  require(a.norm_w.shape[0] == s.D && (s.D <= 1 || a.norm_w.stride[0] == 1), "versatile: ff_norm.weight must be a contiguous [D]");
  require_matrix(a.proj_w, "ff_proj.weight");
  require_matrix(a.out_w, "ff_out.weight");
  require_matrix(a.router_w, "expert_gate.weight");
  require_matrix(a.depth_w, "depth_predictor.weight");
  require(a.proj_w.shape[0] == 2 * s.I && a.proj_w.shape[1] == s.D && a.out_w.shape[0] == s.D, "versatile: FFN weight shapes");
  require(a.router_w.shape[0] == s.N && a.router_w.shape[1] == s.D && a.router_w.contiguous(),
          "versatile: expert_gate.weight must be a contiguous [N, D]");
  require(a.depth_w.shape[0] == s.L && a.depth_w.shape[1] == s.D && a.depth_w.contiguous(),
          "versatile: depth_predictor.weight must be a contiguous [L, D]");
  require(s.N >= 1 && s.N <= kMaxBuckets && s.L >= 1 && s.L <= kMaxBuckets && s.K >= 1 && s.K <= s.N,
          "versatile: this backend handles 1 <= K <= N <= 64 experts and 1 <= L <= 64 loops");
  // disjoint slices: weight gradients of different experts never write the same element
  require(s.E >= 1 && s.E * s.N <= s.I, "versatile: expert slices must not overlap (E·N <= I)");
  require(s.T * s.K <= INT_MAX / 2 && s.T * s.D <= (int64_t(1) << 40), "versatile: sizes beyond this backend");
}

// the width path's grouped GEMMs share their segmentation: positions grouped by expert
void width_groups(GemmSpec& g, const int32_t* start, const VSizes& s) {
  g.seg_start = start;
  g.seg_count = int(s.N);
  g.slice_I = s.I;
  g.slice_E = s.E;
}

View rows_view(const float* p, int64_t rows, int64_t cols, int64_t ld) { return f32_view(p, rows, cols, ld); }
View offset_rows(View w, int64_t rows) {  // the same matrix starting `rows` rows in
  w.data = static_cast<char*>(w.data) + rows * w.stride[0] * dtype_size(w.dtype);
  w.shape[0] -= rows;
  return w;
}

}  // namespace

void versatile_forward(int dev, const VersatileForwardArgs& a) {
  const VSizes s = sizes_of(a);
  check_common(a, s);
  const bool train = a.train != 0;
  const VersatileSaved& sv = a.saved;
  if (train)
    require(sv.order.data && sv.depth_p.data && sv.xs.data && sv.rstd.data && sv.h.data && sv.assign.data &&
                sv.expert_start.data && sv.width_h.data && sv.width_o.data && sv.x_width.data && sv.router_p.data,
            "versatile_forward: training needs every saved view");
  const int64_t T = s.T, D = s.D, I = s.I, N = s.N, K = s.K, L = s.L, E = s.E, P = T * K;
  cudaStream_t st = stream(dev);
  if (T == 0) return;
  const float* x = a.x.ptr<float>();
  int32_t* loops = a.loops.ptr<int32_t>();
  float* lambda = a.lambda.ptr<float>();
  float* weights = a.weights.ptr<float>();
  int32_t* experts = a.experts.ptr<int32_t>();

  {
    Scratch logits(dev, size_t(T * (N + L)) * 4);
    versatile_heads(dev, s, x, a.router_w, a.depth_w, logits.as<float>());
    versatile_route(dev, s, logits.as<float>(), train, a.noise != 0, a.seed, a.tau, experts, weights, loops, lambda,
                    train ? sv.router_p.ptr<float>() : nullptr, train ? sv.depth_p.ptr<float>() : nullptr,
                    a.expert_counts.ptr<int32_t>());
  }
  if (train) versatile_balance(dev, s, sv.router_p.ptr<float>(), a.expert_counts.ptr<int32_t>(), a.balance_weight, a.aux.ptr<float>());

  // depth order and the sorted copy of x; one norm shared by the width path and the first loop
  Scratch order_s(dev, train ? 0 : size_t(T) * 4), pos(dev, size_t(T) * 4), m(dev, size_t(L + 2) * 4);
  int32_t* order = train ? sv.order.ptr<int32_t>() : order_s.as<int32_t>();
  versatile_depth_order(dev, s, loops, order, pos.as<int32_t>(), m.as<int32_t>());
  // the norm and the SwiGLU activations feed GEMMs only: kept in the GEMMs' input dtype
  const int adt = act_dtype(a.proj_w, a.out_w);
  const int64_t as = dtype_size(adt);
  Scratch X_s(dev, train ? 0 : size_t(T * D) * 4), n0(dev, size_t(T * D * as)), n1(dev, size_t(T * D * as)),
      rstd_s(dev, train ? 0 : size_t(T) * 4);
  float* X = train ? sv.xs.ptr<float>() : X_s.as<float>();
  float* rstd0 = train ? sv.rstd.ptr<float>() : rstd_s.as<float>();
  gather_rows(dev, T, D, X, x, order);
  rmsnorm_rows(dev, T, D, X, D, a.norm_w, a.eps, n0.ptr, adt, D, rstd0, false, nullptr);

  // width plan and the first grouped GEMM (gathered norm rows x expert slices, SwiGLU epilogue)
  Scratch assign_s(dev, train ? 0 : size_t(P) * 4), start_s(dev, train ? 0 : size_t(N + 1) * 4);
  int32_t* assign = train ? sv.assign.ptr<int32_t>() : assign_s.as<int32_t>();
  int32_t* start = train ? sv.expert_start.ptr<int32_t>() : start_s.as<int32_t>();
  Scratch rows(dev, size_t(P) * 4), tok(dev, size_t(P) * 4), scale(dev, size_t(P) * 4), slot(dev, size_t(P) * 4),
      act_w(dev, size_t(P * E * as));
  versatile_width_plan(dev, s, experts, loops, lambda, weights, pos.as<int32_t>(), train, assign, start,
                       rows.as<int32_t>(), tok.as<int32_t>(), scale.as<float>(), slot.as<int32_t>());
  GemmSpec w1;
  w1.M = P, w1.N = E, w1.K = D;
  w1.a.v = mat_view(n0.ptr, adt, T, D, D);
  w1.a.gather = rows.as<int32_t>();
  w1.b.v = a.proj_w;
  w1.b.trans = true;
  w1.b.glu_gate = I;
  w1.b.slice_rows = true;
  w1.c = mat_view(act_w.ptr, adt, P, E, E);
  w1.mode = GemmSpec::Glu;
  // a bfloat16 saved width_h (bf16-mixed) is written in float32 scratch and rounded once
  const bool wh16 = train && sv.width_h.dtype == BF16;
  Scratch whs(dev, wh16 ? size_t(P * 2 * E) * 4 : 0);
  w1.h = wh16 ? whs.as<float>() : train ? sv.width_h.ptr<float>() : nullptr;
  w1.h_ld = 2 * E;
  width_groups(w1, start, s);
  w1.bf16_math = true;  // bf16 weights: bf16 tensor cores, activations rounded on load
  gemm_ex(dev, w1);
  if (wh16) save_values(dev, whs.as<float>(), sv.width_h, 0, P * 2 * E);
  GemmSpec w2;  // FFN_e(x) = act · W_out[:, slice_e]ᵀ
  w2.M = P, w2.N = D, w2.K = E;
  w2.a.v = mat_view(act_w.ptr, adt, P, E, E);
  w2.b.v = a.out_w;
  w2.b.trans = true;
  w2.b.slice_k = true;
  w2.bf16_math = true;
  width_groups(w2, start, s);

  // depth path; a bfloat16 saved h (bf16-mixed) is written in float32 scratch and rounded once
  Scratch act(dev, size_t(T * I * as));
  const bool h16 = train && sv.h.dtype == BF16;
  Scratch hs(dev, h16 ? size_t(T * 2 * I) * 4 : 0);
  for (int64_t j = 1; j <= L; j++) {
    const void* n = j == 1 ? n0.ptr : n1.ptr;
    if (train) {
      float* xin = X + (j - 1) * T * D;
      float* xout = X + j * T * D;
      float* rs = sv.rstd.ptr<float>() + (j - 1) * T;
      if (j > 1) rmsnorm_rows(dev, T, D, xin, D, a.norm_w, a.eps, n1.ptr, adt, D, rs, false, nullptr);
      check(cudaMemcpyAsync(xout, xin, size_t(T * D) * 4, cudaMemcpyDeviceToDevice, st), "versatile_forward");
      ffn_rows_forward(dev, T, D, I, n, adt, xout, a.proj_w, a.out_w,
                       h16 ? hs.as<float>() : sv.h.ptr<float>() + (j - 1) * T * 2 * I, act.ptr, nullptr);
      if (h16) save_values(dev, hs.as<float>(), sv.h, (j - 1) * T * 2 * I, T * 2 * I);
    } else {
      // in place over the tokens that still loop: rows [0, m[j]) of the sorted order
      const int32_t* mj = m.as<int32_t>() + j;
      if (j > 1) rmsnorm_rows(dev, T, D, X, D, a.norm_w, a.eps, n1.ptr, adt, D, rstd0, false, mj);
      ffn_rows_forward(dev, T, D, I, n, adt, X, a.proj_w, a.out_w, nullptr, act.ptr, mj);
    }
  }

  // fusion
  float* y = a.y.ptr<float>();
  if (train) {
    w2.c = rows_view(sv.width_o.ptr<float>(), P, D, D);
    gemm_ex(dev, w2);
    combine_kernel<<<grid_for(T * D), 256, 0, st>>>(T, int(D), int(K), x, sv.width_o.ptr<float>(), slot.as<int32_t>(),
                                                   weights, X, loops, pos.as<int32_t>(), lambda,
                                                   sv.x_width.ptr<float>(), y);
    check_launch("versatile fusion");
  } else {
    Scratch wo(dev, size_t(P * D) * 4);
    w2.c = rows_view(wo.as<float>(), P, D, D);
    gemm_ex(dev, w2);
    fuse_kernel<<<grid_for(T * D), 256, 0, st>>>(T, int(D), int(K), x, X, pos.as<int32_t>(), lambda, wo.as<float>(),
                                                slot.as<int32_t>(), scale.as<float>(), y);
    check_launch("versatile fusion");
  }
}

void versatile_backward(int dev, const VersatileBackwardArgs& a) {
  const VSizes s = sizes_of(a);
  check_common(a, s);
  const VersatileSaved& sv = a.saved;
  require(sv.order.data && sv.depth_p.data && sv.xs.data && sv.rstd.data && sv.h.data && sv.assign.data &&
              sv.expert_start.data && sv.width_h.data && sv.width_o.data && sv.x_width.data && sv.router_p.data,
          "versatile_backward: needs every saved view of a training forward");
  require(a.dproj_w.dtype == F32 && a.dout_w.dtype == F32 && a.drouter_w.dtype == F32 && a.ddepth_w.dtype == F32 &&
              a.dnorm_w.dtype == F32 && a.drouter_w.contiguous() && a.ddepth_w.contiguous(),
          "versatile_backward: gradients must be float32");
  const int64_t T = s.T, D = s.D, I = s.I, N = s.N, K = s.K, L = s.L, E = s.E, P = T * K;
  cudaStream_t st = stream(dev);
  if (T == 0) return;
  const float* x = a.x.ptr<float>();
  const float* G = a.dy.ptr<float>();
  const float* X = sv.xs.ptr<float>();
  const int32_t* loops = a.loops.ptr<int32_t>();
  const int32_t* order = sv.order.ptr<int32_t>();
  const float* lambda = a.lambda.ptr<float>();
  const float* weights = a.weights.ptr<float>();
  const int32_t* start = sv.expert_start.ptr<int32_t>();
  float* dproj = a.dproj_w.ptr<float>();
  float* dout = a.dout_w.ptr<float>();
  const int64_t ldp = a.dproj_w.ld(), ldo = a.dout_w.ld();

  Scratch pos(dev, size_t(T) * 4), m(dev, size_t(L + 2) * 4), dz(dev, size_t(T * L) * 4);
  versatile_depth_counts(dev, s, loops, order, pos.as<int32_t>(), m.as<int32_t>());
  depth_grad_kernel<<<warps_grid(T), 256, 0, st>>>(T, int(D), int(L), G, X, sv.x_width.ptr<float>(), loops,
                                                  pos.as<int32_t>(), lambda, sv.depth_p.ptr<float>(), a.tau,
                                                  dz.as<float>());
  check_launch("versatile loop head backward");

  // width path; its norm gradient dn (sorted rows) joins the first loop's
  Scratch n0(dev, size_t(T * D) * 4), dn(dev, size_t(T * D) * 4), rows(dev, size_t(P) * 4), tok(dev, size_t(P) * 4),
      slot(dev, size_t(P) * 4), dO(dev, size_t(P * D) * 4), dw(dev, size_t(P) * 4), da(dev, size_t(P * E) * 4),
      act_w(dev, size_t(P * E) * 4), dh(dev, size_t(P * 2 * E) * 4), ng(dev, size_t(P * D) * 4);
  rmsnorm_rows(dev, T, D, X, D, a.norm_w, 0.f, n0.as<float>(), D, sv.rstd.ptr<float>(), true, nullptr);
  versatile_width_rows(dev, s, sv.assign.ptr<int32_t>(), pos.as<int32_t>(), rows.as<int32_t>(), tok.as<int32_t>(),
                       slot.as<int32_t>());
  width_out_grad_kernel<<<warps_grid(P), 256, 0, st>>>(P, int(D), int(K), sv.assign.ptr<int32_t>(), G,
                                                      sv.width_o.ptr<float>(), lambda, weights, dO.as<float>(),
                                                      dw.as<float>());
  check_launch("versatile width backward");
  GemmSpec g;  // da = dO · W_out[:, slice_e] (W_out stored [D, I] = [K, N])
  g.M = P, g.N = E, g.K = D;
  g.a.v = rows_view(dO.as<float>(), P, D, D);
  g.b.v = a.out_w;
  g.b.slice_rows = true;
  g.c = rows_view(da.as<float>(), P, E, E);
  g.bf16_math = true;
  width_groups(g, start, s);
  gemm_ex(dev, g);
  const bool wh16 = sv.width_h.dtype == BF16;  // bf16-mixed: widened before the SwiGLU backward
  Scratch whs(dev, wh16 ? size_t(P * 2 * E) * 4 : 0);
  if (wh16) load_values(dev, sv.width_h, 0, P * 2 * E, whs.as<float>());
  swiglu_rows_backward(dev, P, E, da.as<float>(), wh16 ? whs.as<float>() : sv.width_h.ptr<float>(), dh.as<float>(),
                       act_w.as<float>(), nullptr);
  GemmSpec gw;  // dW_out[:, slice_e] += dOᵀ · a over expert e's positions (one grid layer per expert)
  gw.M = D, gw.N = E, gw.K = P;
  gw.a.v = rows_view(dO.as<float>(), P, D, D);
  gw.a.trans = true;
  gw.b.v = rows_view(act_w.as<float>(), P, E, E);
  gw.c = rows_view(dout, D, I, ldo);
  gw.c_slice_cols = true;
  gw.beta = 1.f;
  width_groups(gw, start, s);
  gw.seg_over_k = true;
  gemm_ex(dev, gw);
  gather_rows(dev, P, D, ng.as<float>(), n0.as<float>(), rows.as<int32_t>());
  float* dnp = dO.as<float>();  // dO is read for the last time above: now dn by position, [P, D]
  for (int half = 0; half < 2; half++) {  // up rows o_e.., gate rows I + o_e..
    GemmSpec gp;  // dW_proj[slice_e] += dhᵀ · n[rows]
    gp.M = E, gp.N = D, gp.K = P;
    gp.a.v = rows_view(dh.as<float>() + half * E, P, E, 2 * E);
    gp.a.trans = true;
    gp.b.v = rows_view(ng.as<float>(), P, D, D);
    gp.c = rows_view(dproj + half * I * ldp, 2 * I - half * I, D, ldp);
    gp.c_slice_rows = true;
    gp.beta = 1.f;
    width_groups(gp, start, s);
    gp.seg_over_k = true;
    gemm_ex(dev, gp);
    GemmSpec gn;  // dnp[p] (+)= dh_p · W_proj[slice_e] (W_proj stored [2I, D] = [K, N]); up, then gate
    gn.M = P, gn.N = D, gn.K = E;
    gn.a.v = rows_view(dh.as<float>() + half * E, P, E, 2 * E);
    gn.b.v = offset_rows(a.proj_w, half * I);
    gn.b.slice_k = true;
    gn.c = rows_view(dnp, P, D, D);
    gn.beta = float(half);
    gn.bf16_math = true;
    width_groups(gn, start, s);
    gemm_ex(dev, gn);
  }
  gather_positions_kernel<<<grid_for(T * D), 256, 0, st>>>(T, int(D), int(K), order, slot.as<int32_t>(), dnp,
                                                          dn.as<float>());
  check_launch("versatile width backward");

  Scratch dr(dev, size_t(T * N) * 4);
  router_grad_kernel<<<blocks_for(T, 128, 1u << 30), 128, 0, st>>>(T, int(N), int(K), a.experts.ptr<int32_t>(), weights,
                                                                   dw.as<float>(), sv.router_p.ptr<float>(),
                                                                   a.expert_counts.ptr<int32_t>(), a.balance_weight,
                                                                   a.aux_grad, dr.as<float>());
  check_launch("versatile router backward");

  // depth path in reverse: a token joins at its own depth; loop j covers rows [0, m[j])
  Scratch dcur(dev, size_t(T * D) * 4);
  const bool h16 = sv.h.dtype == BF16;  // bf16-mixed: each loop's h widened before its backward
  Scratch hs(dev, h16 ? size_t(T * 2 * I) * 4 : 0);
  for (int64_t j = L; j >= 1; j--) {
    depth_enter_kernel<<<grid_for(T * D), 256, 0, st>>>(T, int(D), int(j), order, loops, lambda, G, dcur.as<float>());
    check_launch("versatile depth backward");
    if (h16) load_values(dev, sv.h, (j - 1) * T * 2 * I, T * 2 * I, hs.as<float>());
    ffn_rows_backward(dev, T, D, I, dcur.as<float>(), X + (j - 1) * T * D, sv.rstd.ptr<float>() + (j - 1) * T,
                      h16 ? hs.as<float>() : sv.h.ptr<float>() + (j - 1) * T * 2 * I, a.norm_w, a.proj_w, a.out_w, a.dnorm_w.ptr<float>(),
                      dproj, ldp, dout, ldo, j == 1 ? dn.as<float>() : nullptr, m.as<int32_t>() + j);
  }

  // dx: depth path, the width path's residual, then both heads; the heads' weight gradients
  float* dx = a.dx.ptr<float>();
  dx_kernel<<<grid_for(T * D), 256, 0, st>>>(T, int(D), dcur.as<float>(), pos.as<int32_t>(), lambda, G, dx);
  check_launch("versatile backward");
  const View dxv = rows_view(dx, T, D, D), xv = rows_view(x, T, D, D);
  gemm(dev, dxv, rows_view(dr.as<float>(), T, N, N), a.router_w, false, false, 1.f, 1.f);
  gemm(dev, dxv, rows_view(dz.as<float>(), T, L, L), a.depth_w, false, false, 1.f, 1.f);
  gemm(dev, a.drouter_w, rows_view(dr.as<float>(), T, N, N), xv, true, false, 1.f, 1.f);
  gemm(dev, a.ddepth_w, rows_view(dz.as<float>(), T, L, L), xv, true, false, 1.f, 1.f);
}

}  // namespace vffn::cuda

VFFN_CUDA_EXPORT int vffn_cuda_versatile_forward(int dev, const void* args) {
  return vffn::cuda::entry(
      [&] { vffn::cuda::versatile_forward(dev, *static_cast<const vffn::VersatileForwardArgs*>(args)); });
}

VFFN_CUDA_EXPORT int vffn_cuda_versatile_backward(int dev, const void* args) {
  return vffn::cuda::entry(
      [&] { vffn::cuda::versatile_backward(dev, *static_cast<const vffn::VersatileBackwardArgs*>(args)); });
}
