// the dense SwiGLU FFN with its residual on CUDA, forward and backward (SPEC.md):
// y = x + W_out · (silu(W_gate · n(x)) ⊙ (W_up · n(x))). T rows, D width, I intermediate.
// forward is two GEMMs: the first computes up and gate tiles side by side and applies SwiGLU in
// its epilogue (h saved from there in training), the second adds into y in place (beta = 1).
// the row helpers also run each loop of VersatileFFN's depth path, on a device-side row count.
#include "../core/ffn_args.h"
#include "ffn.cuh"

namespace vffn::cuda {

namespace {

__device__ __forceinline__ int live_rows(int64_t M, const int* m_limit) {
  return int(m_limit ? min(M, int64_t(*m_limit)) : M);
}

// silu'(g) = s·(1 + g·(1 − s)), s = sigmoid(g)
__global__ void swiglu_backward_kernel(int64_t M, int64_t n, const float* da, const float* h, float* dh, float* a,
                                       const int* m_limit) {
  const int64_t total = int64_t(live_rows(M, m_limit)) * n;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx / n, j = idx - i * n;
    const float u = h[i * 2 * n + j], g = h[i * 2 * n + n + j], d = da[idx];
    const float s = 1.f / (1.f + __expf(-g)), silu = g * s;
    dh[i * 2 * n + j] = d * silu;
    dh[i * 2 * n + n + j] = d * u * s * (1.f + g * (1.f - s));
    if (a) a[idx] = silu * u;
  }
}

__global__ void round_bf16_kernel(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = f32_to_bf16_bits(src[i]);
}

__global__ void widen_bf16_kernel(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = bf16_bits_to_f32(src[i]);
}

}  // namespace

void save_values(int dev, const float* src, const View& v, int64_t offset, int64_t n) {
  cudaStream_t st = stream(dev);
  if (n == 0) return;
  if (v.dtype != BF16) {
    check(cudaMemcpyAsync(v.ptr<float>() + offset, src, size_t(n) * 4, cudaMemcpyDeviceToDevice, st), "save_values");
    return;
  }
  round_bf16_kernel<<<blocks_for(n, 256, 1u << 20), 256, 0, st>>>(src, v.ptr<uint16_t>() + offset, n);
  check_launch("save_values");
}

void load_values(int dev, const View& v, int64_t offset, int64_t n, float* dst) {
  cudaStream_t st = stream(dev);
  if (n == 0) return;
  if (v.dtype != BF16) {
    check(cudaMemcpyAsync(dst, v.ptr<float>() + offset, size_t(n) * 4, cudaMemcpyDeviceToDevice, st), "load_values");
    return;
  }
  widen_bf16_kernel<<<blocks_for(n, 256, 1u << 20), 256, 0, st>>>(v.ptr<uint16_t>() + offset, dst, n);
  check_launch("load_values");
}

void swiglu_rows_backward(int dev, int64_t M, int64_t n, const float* da, const float* h, float* dh, float* a,
                          const int* m_limit) {
  cudaStream_t st = stream(dev);
  if (M == 0 || n == 0) return;
  swiglu_backward_kernel<<<blocks_for(M * n, 256, 1u << 20), 256, 0, st>>>(M, n, da, h, dh, a, m_limit);
  check_launch("swiglu_backward");
}

void ffn_rows_forward(int dev, int64_t M, int64_t D, int64_t I, const void* n, int adt, float* x, const View& proj_w,
                      const View& out_w, float* h, void* act, const int* m_limit) {
  if (M == 0) return;
  GemmSpec up;  // act = silu(n·W_gateᵀ) ⊙ (n·W_upᵀ), up and gate rows of ff_proj read side by side
  up.M = M;
  up.N = I;
  up.K = D;
  up.a.v = mat_view(n, adt, M, D, D);
  up.b.v = proj_w;
  up.b.trans = true;
  up.b.glu_gate = I;
  up.c = mat_view(act, adt, M, I, I);
  up.mode = GemmSpec::Glu;
  up.h = h;
  up.h_ld = 2 * I;
  up.m_limit = m_limit;
  up.bf16_math = true;  // a bfloat16 model's GEMMs run on bf16 tensor cores
  gemm_ex(dev, up);
  GemmSpec down;  // x += act·W_outᵀ (in place: each block reads only the c elements it writes)
  down.M = M;
  down.N = D;
  down.K = I;
  down.a.v = mat_view(act, adt, M, I, I);
  down.b.v = out_w;
  down.b.trans = true;
  down.c = f32_view(x, M, D, D);
  down.beta = 1.f;
  down.m_limit = m_limit;
  down.bf16_math = true;
  gemm_ex(dev, down);
}

void ffn_rows_backward(int dev, int64_t M, int64_t D, int64_t I, float* dx, const float* x, const float* rstd,
                       const float* h, const View& norm_w, const View& proj_w, const View& out_w, float* dnorm_w,
                       float* dproj_w, int64_t lddp, float* dout_w, int64_t lddo, const float* dn_extra,
                       const int* m_limit) {
  if (M == 0) return;
  // scratch for M rows: da and a [M, I], dh [M, 2I], n and dn [M, D]
  Scratch da(dev, size_t(M * I) * 4), act(dev, size_t(M * I) * 4), dh(dev, size_t(M * 2 * I) * 4),
      n(dev, size_t(M * D) * 4), dn(dev, size_t(M * D) * 4);
  // da = dx · W_out (W_out stored [D, I] = [K, N])
  GemmSpec s1;
  s1.M = M, s1.N = I, s1.K = D;
  s1.a.v = f32_view(dx, M, D, D);
  s1.b.v = out_w;
  s1.c = f32_view(da.as<float>(), M, I, I);
  s1.m_limit = m_limit;
  s1.bf16_math = true;
  gemm_ex(dev, s1);
  swiglu_rows_backward(dev, M, I, da.as<float>(), h, dh.as<float>(), act.as<float>(), m_limit);
  // dW_out += dxᵀ · a: K runs over the rows, so with a device-side row count it becomes one
  // k group [0, *m_limit) (rows past the count hold stale values and must not enter the sum)
  GemmSpec s2;
  s2.M = D, s2.N = I, s2.K = M;
  s2.a.v = f32_view(dx, M, D, D);
  s2.a.trans = true;
  s2.b.v = f32_view(act.as<float>(), M, I, I);
  s2.c = f32_view(dout_w, D, I, lddo);
  s2.beta = 1.f;
  // the normalised input again, from the saved rstd (the forward's values)
  rmsnorm_rows(dev, M, D, x, D, norm_w, 0.f, n.as<float>(), D, const_cast<float*>(rstd), true, m_limit);
  GemmSpec s3;  // dW_proj += dhᵀ · n
  s3.M = 2 * I, s3.N = D, s3.K = M;
  s3.a.v = f32_view(dh.as<float>(), M, 2 * I, 2 * I);
  s3.a.trans = true;
  s3.b.v = f32_view(n.as<float>(), M, D, D);
  s3.c = f32_view(dproj_w, 2 * I, D, lddp);
  s3.beta = 1.f;
  if (m_limit) {
    // K = live rows: one group over k, [0, *m_limit), read from the device
    static_assert(sizeof(int) == 4, "int32 counts");
    Scratch range(dev, 2 * sizeof(int));
    cudaStream_t st = stream(dev);
    check(cudaMemsetAsync(range.ptr, 0, sizeof(int), st), "ffn_backward");
    check(cudaMemcpyAsync(range.as<int>() + 1, m_limit, sizeof(int), cudaMemcpyDeviceToDevice, st), "ffn_backward");
    s2.seg_start = s3.seg_start = range.as<int>();
    s2.seg_count = s3.seg_count = 1;
    s2.seg_over_k = s3.seg_over_k = true;
    gemm_ex(dev, s2);
    gemm_ex(dev, s3);
  } else {
    gemm_ex(dev, s2);
    gemm_ex(dev, s3);
  }
  GemmSpec s4;  // dn = dh · W_proj (stored [2I, D] = [K, N])
  s4.M = M, s4.N = D, s4.K = 2 * I;
  s4.a.v = f32_view(dh.as<float>(), M, 2 * I, 2 * I);
  s4.b.v = proj_w;
  s4.c = f32_view(dn.as<float>(), M, D, D);
  s4.m_limit = m_limit;
  s4.bf16_math = true;
  if (dn_extra) {  // dn = dn_extra + dh·W_proj
    check(cudaMemcpyAsync(dn.ptr, dn_extra, size_t(M * D) * 4, cudaMemcpyDeviceToDevice, stream(dev)), "ffn_backward");
    s4.beta = 1.f;
  }
  gemm_ex(dev, s4);
  rmsnorm_rows_backward(dev, M, D, dn.as<float>(), D, x, D, norm_w, rstd, dx, D, true, dnorm_w, m_limit);
}

}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

namespace {

void check_ffn_views(const View& x, const View& norm_w, const View& proj_w, const View& out_w, int64_t& T, int64_t& D,
                     int64_t& I) {
  require(x.dtype == F32 && x.ndim == 2 && x.contiguous(), "ffn: x must be a contiguous float32 [T, D]");
  T = x.shape[0];
  D = x.shape[1];
  require_float(norm_w, "ff_norm.weight", 1);
  require_matrix(proj_w, "ff_proj.weight");
  require_matrix(out_w, "ff_out.weight");
  I = out_w.shape[1];
  require(norm_w.shape[0] == D && (D <= 1 || norm_w.stride[0] == 1), "ffn: ff_norm.weight must be a contiguous [D]");
  require(proj_w.shape[0] == 2 * I && proj_w.shape[1] == D, "ffn: ff_proj.weight must be [2I, D]");
  require(out_w.shape[0] == D, "ffn: ff_out.weight must be [D, I]");
}

}  // namespace

VFFN_CUDA_EXPORT int vffn_cuda_ffn_forward(int dev, const void* args) {
  return entry([&] {
    const FfnForwardArgs& a = *static_cast<const FfnForwardArgs*>(args);
    int64_t T, D, I;
    check_ffn_views(a.x, a.norm_w, a.proj_w, a.out_w, T, D, I);
    require(a.y.dtype == F32 && a.y.contiguous() && a.y.numel() == T * D, "ffn: y must be a contiguous float32 [T, D]");
    require(!a.h.data || (a.h.contiguous() && a.h.numel() == T * 2 * I), "ffn: h must be a contiguous [T, 2I]");
    require(!a.rstd.data || a.rstd.numel() == T, "ffn: rstd must be [T]");
    cudaStream_t st = stream(dev);
    if (T == 0) return;
    const int adt = act_dtype(a.proj_w, a.out_w);
    Scratch n(dev, size_t(T * D * dtype_size(adt))), act(dev, size_t(T * I * dtype_size(adt)));
    Scratch rs(dev, a.rstd.data ? 0 : size_t(T) * 4);
    float* rstd = a.rstd.data ? a.rstd.ptr<float>() : rs.as<float>();
    rmsnorm_rows(dev, T, D, a.x.ptr<float>(), D, a.norm_w, a.eps, n.ptr, adt, D, rstd, false, nullptr);
    check(cudaMemcpyAsync(a.y.data, a.x.data, size_t(T * D) * 4, cudaMemcpyDeviceToDevice, st), "ffn_forward");
    // a bfloat16 h (bf16-mixed) is written in float32 scratch and rounded once
    const bool h16 = a.h.data && a.h.dtype == BF16;
    Scratch hs(dev, h16 ? size_t(T * 2 * I) * 4 : 0);
    ffn_rows_forward(dev, T, D, I, n.ptr, adt, a.y.ptr<float>(), a.proj_w, a.out_w,
                     h16 ? hs.as<float>() : a.h.data ? a.h.ptr<float>() : nullptr, act.ptr, nullptr);
    if (h16) save_values(dev, hs.as<float>(), a.h, 0, T * 2 * I);
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_ffn_backward(int dev, const void* args) {
  return entry([&] {
    const FfnBackwardArgs& a = *static_cast<const FfnBackwardArgs*>(args);
    int64_t T, D, I;
    check_ffn_views(a.x, a.norm_w, a.proj_w, a.out_w, T, D, I);
    require(a.dx.dtype == F32 && a.dx.contiguous() && a.dx.numel() == T * D, "ffn_backward: dx must be a contiguous float32 [T, D]");
    require(a.dy.dtype == F32 && a.dy.contiguous() && a.dy.numel() == T * D, "ffn_backward: dy must be a contiguous float32 [T, D]");
    require(a.h.data && a.h.contiguous() && a.h.numel() == T * 2 * I, "ffn_backward: h must be the forward's [T, 2I]");
    require(a.rstd.data && a.rstd.numel() == T, "ffn_backward: rstd must be the forward's [T]");
    require_matrix(a.dproj_w, "dproj_w");
    require_matrix(a.dout_w, "dout_w");
    require(a.dproj_w.dtype == F32 && a.dout_w.dtype == F32 && a.dnorm_w.dtype == F32 && a.dnorm_w.contiguous(),
            "ffn_backward: gradients must be float32");
    cudaStream_t st = stream(dev);
    if (T == 0) return;
    check(cudaMemcpyAsync(a.dx.data, a.dy.data, size_t(T * D) * 4, cudaMemcpyDeviceToDevice, st), "ffn_backward");
    const bool h16 = a.h.dtype == BF16;
    Scratch hs(dev, h16 ? size_t(T * 2 * I) * 4 : 0);
    if (h16) load_values(dev, a.h, 0, T * 2 * I, hs.as<float>());
    ffn_rows_backward(dev, T, D, I, a.dx.ptr<float>(), a.x.ptr<float>(), a.rstd.ptr<float>(), h16 ? hs.as<float>() : a.h.ptr<float>(),
                      a.norm_w, a.proj_w, a.out_w, a.dnorm_w.ptr<float>(), a.dproj_w.ptr<float>(), a.dproj_w.ld(),
                      a.dout_w.ptr<float>(), a.dout_w.ld(), nullptr, nullptr);
  });
}
