// the mixture-of-experts FFN on CUDA, forward and backward (SPEC.md): VersatileFFN's router kernels
// (run with one loop-head row that is ignored) and the width path's grouped GEMMs with I = N·E, so
// expert e's weights are the slice at expert_offset(e, N, N·E, E) = e·E. rows stay in token order
// (the plan's row of token t is t); no host synchronisation inside.
// T tokens, D width, I = N·E intermediate, N experts, K per token, E expert width, P = T·K positions.
#include <climits>

#include "versatile.cuh"

namespace vffn::cuda {

namespace {

__global__ void fill_kernel(int64_t n, float v, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = v;
}

__global__ void iota_kernel(int64_t n, int32_t* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = int32_t(i);
}

// y[t] = x[t] + Σ_k w_tk·o[slot(t,k)], k in order (the same bits on every run)
__global__ void moe_combine_kernel(int64_t T, int D, int K, const float* x, const float* wo, const int32_t* slot,
                                   const float* weights, float* y) {
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, j = i - t * D;
    float v = x[i];
    for (int k = 0; k < K; k++) v += weights[t * K + k] * wo[int64_t(slot[t * K + k]) * D + j];
    y[i] = v;
  }
}

// one warp per position p (assignment a, token t): dO[p] = w_a·G[t], dw[a] = ⟨G[t], o[p]⟩
__global__ void moe_out_grad_kernel(int64_t P, int D, int K, const int32_t* assign, const float* G, const float* wo,
                                    const float* weights, float* dO, float* dw) {
  const int64_t p = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (p >= P) return;
  const int64_t a = assign[p], t = a / K;
  const float sc = weights[a];
  float dot = 0.f;
  for (int i = lane; i < D; i += 32) {
    const float g = G[t * D + i];
    dot += g * wo[p * D + i];
    dO[p * D + i] = sc * g;
  }
  dot = warp_sum(dot);
  if (lane == 0) dw[a] = dot;
}

// dn[t] = Σ_k part[slot(t, k)], k in order
__global__ void moe_gather_kernel(int64_t T, int D, int K, const int32_t* slot, const float* part, float* dn) {
  const int64_t total = T * D;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, j = i - t * D;
    float v = 0.f;
    for (int k = 0; k < K; k++) v += part[int64_t(slot[t * K + k]) * D + j];
    dn[i] = v;
  }
}

// router logits: softmax over the chosen K, plus the balance loss through P_e (one thread per token)
__global__ void moe_router_grad_kernel(int64_t T, int N, int K, const int32_t* experts, const float* weights,
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

__global__ void add_kernel(int64_t n, const float* src, float* dst) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

unsigned grid_for(int64_t n) { return blocks_for(n, 256, 1u << 20); }
unsigned warps_grid(int64_t warps) { return blocks_for(warps * 32, 256, 1u << 30); }

template <class A>
VSizes sizes_of(const A& a) {
  // one loop-head row: the routing kernels are VersatileFFN's, their loop choice is ignored
  return {a.x.rows(), a.x.cols(), a.out_w.cols(), a.n_experts, a.top_k, 1, a.expert_hidden};
}

template <class A>
void check_common(const A& a, const VSizes& s) {
  require(a.x.dtype == F32 && a.x.ndim == 2 && a.x.contiguous(), "moe: x must be a contiguous float32 [T, D]");
  require_float(a.norm_w, "ff_norm.weight", 1);
  require(a.norm_w.shape[0] == s.D && (s.D <= 1 || a.norm_w.stride[0] == 1), "moe: ff_norm.weight must be a contiguous [D]");
  require_matrix(a.proj_w, "ff_proj.weight");
  require_matrix(a.out_w, "ff_out.weight");
  require_matrix(a.router_w, "expert_gate.weight");
  require(a.proj_w.shape[0] == 2 * s.I && a.proj_w.shape[1] == s.D && a.out_w.shape[0] == s.D, "moe: FFN weight shapes");
  require(a.router_w.shape[0] == s.N && a.router_w.shape[1] == s.D && a.router_w.contiguous(),
          "moe: expert_gate.weight must be a contiguous [N, D]");
  require(s.N >= 1 && s.N <= kMaxBuckets && s.K >= 1 && s.K <= s.N, "moe: this backend handles 1 <= K <= N <= 64 experts");
  require(s.E >= 1 && s.E * s.N == s.I, "moe: the experts must tile the intermediate dimension (N·E = I)");
  require(s.T * s.K <= INT_MAX / 2 && s.T * s.D <= (int64_t(1) << 40), "moe: sizes beyond this backend");
}

void width_groups(GemmSpec& g, const int32_t* start, const VSizes& s) {
  g.seg_start = start;
  g.seg_count = int(s.N);
  g.slice_I = s.I;
  g.slice_E = s.E;
}

View offset_rows(View w, int64_t rows) {  // the same matrix starting `rows` rows in
  w.data = static_cast<char*>(w.data) + rows * w.stride[0] * dtype_size(w.dtype);
  w.shape[0] -= rows;
  return w;
}

}  // namespace

void moe_forward(int dev, const MoeForwardArgs& a) {
  const VSizes s = sizes_of(a);
  check_common(a, s);
  const bool train = a.train != 0;
  const MoeSaved& sv = a.saved;
  if (train)
    require(sv.rstd.data && sv.assign.data && sv.expert_start.data && sv.width_h.data && sv.width_o.data &&
                sv.router_p.data,
            "moe_forward: training needs every saved view");
  const int64_t T = s.T, D = s.D, I = s.I, N = s.N, K = s.K, E = s.E, P = T * K;
  cudaStream_t st = stream(dev);
  if (T == 0) return;
  const float* x = a.x.ptr<float>();
  float* weights = a.weights.ptr<float>();
  int32_t* experts = a.experts.ptr<int32_t>();

  // routing: the loop-head row reads the router's first row and its choice is dropped
  Scratch loops(dev, size_t(T) * 4), lambda(dev, size_t(T) * 4), depth_p(dev, size_t(T) * 4),
      router_p(dev, train ? 0 : size_t(T * N) * 4);
  {
    Scratch logits(dev, size_t(T * (N + 1)) * 4);
    versatile_heads(dev, s, x, a.router_w, a.router_w, logits.as<float>());
    versatile_route(dev, s, logits.as<float>(), true, false, 0, 1.f, experts, weights, loops.as<int32_t>(),
                    lambda.as<float>(), train ? sv.router_p.ptr<float>() : router_p.as<float>(), depth_p.as<float>(),
                    a.expert_counts.ptr<int32_t>());
  }
  if (train) versatile_balance(dev, s, sv.router_p.ptr<float>(), a.expert_counts.ptr<int32_t>(), a.balance_weight, a.aux.ptr<float>());

  // one norm per token; every token routed (weight scale 1), rows in token order
  const int adt = act_dtype(a.proj_w, a.out_w);
  const int64_t as = dtype_size(adt);
  Scratch n0(dev, size_t(T * D * as)), rstd_s(dev, train ? 0 : size_t(T) * 4), ones(dev, size_t(T) * 4),
      pos(dev, size_t(T) * 4);
  float* rstd = train ? sv.rstd.ptr<float>() : rstd_s.as<float>();
  rmsnorm_rows(dev, T, D, x, D, a.norm_w, a.eps, n0.ptr, adt, D, rstd, false, nullptr);
  fill_kernel<<<blocks_for(T, 256, 1u << 30), 256, 0, st>>>(T, 1.f, ones.as<float>());
  iota_kernel<<<blocks_for(T, 256, 1u << 30), 256, 0, st>>>(T, pos.as<int32_t>());
  check_launch("moe plan");
  Scratch assign_s(dev, train ? 0 : size_t(P) * 4), start_s(dev, train ? 0 : size_t(N + 1) * 4);
  int32_t* assign = train ? sv.assign.ptr<int32_t>() : assign_s.as<int32_t>();
  int32_t* start = train ? sv.expert_start.ptr<int32_t>() : start_s.as<int32_t>();
  Scratch rows(dev, size_t(P) * 4), tok(dev, size_t(P) * 4), scale(dev, size_t(P) * 4), slot(dev, size_t(P) * 4),
      act_w(dev, size_t(P * E * as)), wo_s(dev, train ? 0 : size_t(P * D) * 4);
  versatile_width_plan(dev, s, experts, loops.as<int32_t>(), ones.as<float>(), weights, pos.as<int32_t>(), true, assign,
                       start, rows.as<int32_t>(), tok.as<int32_t>(), scale.as<float>(), slot.as<int32_t>());
  GemmSpec w1;  // gathered norm rows x expert e's up and gate rows, SwiGLU in the epilogue
  w1.M = P, w1.N = E, w1.K = D;
  w1.a.v = mat_view(n0.ptr, adt, T, D, D);
  w1.a.gather = rows.as<int32_t>();
  w1.b.v = a.proj_w;
  w1.b.trans = true;
  w1.b.glu_gate = I;
  w1.b.slice_rows = true;
  w1.c = mat_view(act_w.ptr, adt, P, E, E);
  w1.mode = GemmSpec::Glu;
  w1.h = train ? sv.width_h.ptr<float>() : nullptr;
  w1.h_ld = 2 * E;
  width_groups(w1, start, s);
  w1.bf16_math = true;
  gemm_ex(dev, w1);
  float* wo = train ? sv.width_o.ptr<float>() : wo_s.as<float>();
  GemmSpec w2;  // FFN_e(x) = act · W_out[:, slice_e]ᵀ
  w2.M = P, w2.N = D, w2.K = E;
  w2.a.v = mat_view(act_w.ptr, adt, P, E, E);
  w2.b.v = a.out_w;
  w2.b.trans = true;
  w2.b.slice_k = true;
  w2.c = f32_view(wo, P, D, D);
  w2.bf16_math = true;
  width_groups(w2, start, s);
  gemm_ex(dev, w2);
  moe_combine_kernel<<<grid_for(T * D), 256, 0, st>>>(T, int(D), int(K), x, wo, slot.as<int32_t>(), weights,
                                                     a.y.ptr<float>());
  check_launch("moe combine");
}

void moe_backward(int dev, const MoeBackwardArgs& a) {
  const VSizes s = sizes_of(a);
  check_common(a, s);
  const MoeSaved& sv = a.saved;
  require(sv.rstd.data && sv.assign.data && sv.expert_start.data && sv.width_h.data && sv.width_o.data &&
              sv.router_p.data,
          "moe_backward: needs every saved view of a training forward");
  require(a.dproj_w.dtype == F32 && a.dout_w.dtype == F32 && a.drouter_w.dtype == F32 && a.dnorm_w.dtype == F32 &&
              a.drouter_w.contiguous(),
          "moe_backward: gradients must be float32");
  const int64_t T = s.T, D = s.D, I = s.I, N = s.N, K = s.K, E = s.E, P = T * K;
  cudaStream_t st = stream(dev);
  if (T == 0) return;
  const float* x = a.x.ptr<float>();
  const float* G = a.dy.ptr<float>();
  const float* weights = a.weights.ptr<float>();
  const int32_t* start = sv.expert_start.ptr<int32_t>();
  float* rstd = sv.rstd.ptr<float>();
  float* dproj = a.dproj_w.ptr<float>();
  float* dout = a.dout_w.ptr<float>();
  const int64_t ldp = a.dproj_w.ld(), ldo = a.dout_w.ld();

  Scratch pos(dev, size_t(T) * 4), n0(dev, size_t(T * D) * 4), dn(dev, size_t(T * D) * 4), rows(dev, size_t(P) * 4),
      tok(dev, size_t(P) * 4), slot(dev, size_t(P) * 4), dO(dev, size_t(P * D) * 4), dw(dev, size_t(P) * 4),
      da(dev, size_t(P * E) * 4), act_w(dev, size_t(P * E) * 4), dh(dev, size_t(P * 2 * E) * 4),
      ng(dev, size_t(P * D) * 4);
  iota_kernel<<<blocks_for(T, 256, 1u << 30), 256, 0, st>>>(T, pos.as<int32_t>());
  check_launch("moe backward");
  rmsnorm_rows(dev, T, D, x, D, a.norm_w, 0.f, n0.as<float>(), D, rstd, true, nullptr);
  versatile_width_rows(dev, s, sv.assign.ptr<int32_t>(), pos.as<int32_t>(), rows.as<int32_t>(), tok.as<int32_t>(),
                       slot.as<int32_t>());
  moe_out_grad_kernel<<<warps_grid(P), 256, 0, st>>>(P, int(D), int(K), sv.assign.ptr<int32_t>(), G,
                                                    sv.width_o.ptr<float>(), weights, dO.as<float>(), dw.as<float>());
  check_launch("moe backward");
  GemmSpec g;  // da = dO · W_out[:, slice_e]
  g.M = P, g.N = E, g.K = D;
  g.a.v = f32_view(dO.as<float>(), P, D, D);
  g.b.v = a.out_w;
  g.b.slice_rows = true;
  g.c = f32_view(da.as<float>(), P, E, E);
  g.bf16_math = true;
  width_groups(g, start, s);
  gemm_ex(dev, g);
  swiglu_rows_backward(dev, P, E, da.as<float>(), sv.width_h.ptr<float>(), dh.as<float>(), act_w.as<float>(), nullptr);
  GemmSpec gw;  // dW_out[:, slice_e] += dOᵀ · a over expert e's positions
  gw.M = D, gw.N = E, gw.K = P;
  gw.a.v = f32_view(dO.as<float>(), P, D, D);
  gw.a.trans = true;
  gw.b.v = f32_view(act_w.as<float>(), P, E, E);
  gw.c = f32_view(dout, D, I, ldo);
  gw.c_slice_cols = true;
  gw.beta = 1.f;
  width_groups(gw, start, s);
  gw.seg_over_k = true;
  gemm_ex(dev, gw);
  gather_rows(dev, P, D, ng.as<float>(), n0.as<float>(), rows.as<int32_t>());
  float* dnp = dO.as<float>();  // dO is read for the last time above: now dn by position, [P, D]
  for (int half = 0; half < 2; half++) {  // up rows e·E.., gate rows I + e·E..
    GemmSpec gp;  // dW_proj[slice_e] += dhᵀ · n[rows]
    gp.M = E, gp.N = D, gp.K = P;
    gp.a.v = f32_view(dh.as<float>() + half * E, P, E, 2 * E);
    gp.a.trans = true;
    gp.b.v = f32_view(ng.as<float>(), P, D, D);
    gp.c = f32_view(dproj + half * I * ldp, 2 * I - half * I, D, ldp);
    gp.c_slice_rows = true;
    gp.beta = 1.f;
    width_groups(gp, start, s);
    gp.seg_over_k = true;
    gemm_ex(dev, gp);
    GemmSpec gn;  // dnp[p] (+)= dh_p · W_proj[slice_e]; up, then gate
    gn.M = P, gn.N = D, gn.K = E;
    gn.a.v = f32_view(dh.as<float>() + half * E, P, E, 2 * E);
    gn.b.v = offset_rows(a.proj_w, half * I);
    gn.b.slice_k = true;
    gn.c = f32_view(dnp, P, D, D);
    gn.beta = float(half);
    gn.bf16_math = true;
    width_groups(gn, start, s);
    gemm_ex(dev, gn);
  }
  moe_gather_kernel<<<grid_for(T * D), 256, 0, st>>>(T, int(D), int(K), slot.as<int32_t>(), dnp, dn.as<float>());
  check_launch("moe backward");

  Scratch dr(dev, size_t(T * N) * 4);
  moe_router_grad_kernel<<<blocks_for(T, 128, 1u << 30), 128, 0, st>>>(T, int(N), int(K), a.experts.ptr<int32_t>(),
                                                                       weights, dw.as<float>(), sv.router_p.ptr<float>(),
                                                                       a.expert_counts.ptr<int32_t>(),
                                                                       a.balance_weight, a.aux_grad, dr.as<float>());
  check_launch("moe router backward");

  // dx = the norm's backward of dn + dy (the residual) + the router's; the router's weight gradient
  float* dx = a.dx.ptr<float>();
  rmsnorm_rows_backward(dev, T, D, dn.as<float>(), D, x, D, a.norm_w, rstd, dx, D, false, a.dnorm_w.ptr<float>(),
                        nullptr);
  add_kernel<<<grid_for(T * D), 256, 0, st>>>(T * D, G, dx);
  check_launch("moe backward");
  const View dxv = f32_view(dx, T, D, D), xv = f32_view(x, T, D, D);
  gemm(dev, dxv, f32_view(dr.as<float>(), T, N, N), a.router_w, false, false, 1.f, 1.f);
  gemm(dev, a.drouter_w, f32_view(dr.as<float>(), T, N, N), xv, true, false, 1.f, 1.f);
}

}  // namespace vffn::cuda

VFFN_CUDA_EXPORT int vffn_cuda_moe_forward(int dev, const void* args) {
  return vffn::cuda::entry([&] { vffn::cuda::moe_forward(dev, *static_cast<const vffn::MoeForwardArgs*>(args)); });
}

VFFN_CUDA_EXPORT int vffn_cuda_moe_backward(int dev, const void* args) {
  return vffn::cuda::entry([&] { vffn::cuda::moe_backward(dev, *static_cast<const vffn::MoeBackwardArgs*>(args)); });
}
