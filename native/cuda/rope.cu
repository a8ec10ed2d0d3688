// rotary position embedding on CUDA, non-interleaved ("rotate half"), in place on [B, S, H*hd];
// backward is the inverse rotation. angles in double like the CPU, so long positions keep their
// precision; one thread per (row, head, pair).
#include "../core/lm_args.h"
#include "common.cuh"

namespace vffn::cuda {
namespace {

__global__ void rope_kernel(float* x, int64_t B, int64_t S, int64_t H, int64_t hd, int64_t sb, int64_t ss,
                            int64_t pos_offset, const int32_t* starts, double theta, float sign) {
  const int64_t half = hd / 2, total = B * S * H * half;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half, h = (idx / half) % H, r = idx / (half * H), b = r / S, s = r % S;
    // reduced to [-π, π] in double, where the fast float sin/cos are accurate to ~1e-6
    const int64_t pos = (starts ? int64_t(starts[b]) : pos_offset) + s;  // per-row starts when serving
    double ang = fmod(double(pos) * pow(theta, -2.0 * double(i) / double(hd)), 6.283185307179586);
    if (ang > 3.141592653589793) ang -= 6.283185307179586;
    float sn, c;
    sincosf(float(ang), &sn, &c);
    sn *= sign;
    float* p = x + b * sb + s * ss + h * hd;
    const float u = p[i], w = p[i + half];
    p[i] = u * c - w * sn;
    p[i + half] = w * c + u * sn;
  }
}

void rope(int dev, const RopeArgs& a, float sign) {
  require(a.x.dtype == F32 && a.x.ndim == 3 && a.x.stride[2] == 1, "rope: x must be float32 [B, S, H*hd] with unit last stride");
  require(a.heads > 0 && a.x.shape[2] % a.heads == 0, "rope: heads must divide the row width");
  const int64_t B = a.x.shape[0], S = a.x.shape[1], H = a.heads, hd = a.x.shape[2] / H;
  cudaStream_t st = stream(dev);
  const int64_t n = B * S * H * (hd / 2);
  if (n == 0) return;
  rope_kernel<<<blocks_for(n, 256, 1u << 20), 256, 0, st>>>(a.x.ptr<float>(), B, S, H, hd, a.x.stride[0], a.x.stride[1],
                                                            a.pos_offset, a.starts.data ? a.starts.ptr<int32_t>() : nullptr,
                                                            double(a.theta), sign);
  check_launch("rope");
}

}  // namespace
}  // namespace vffn::cuda

VFFN_CUDA_EXPORT int vffn_cuda_rope_forward(int dev, const void* args) {
  return vffn::cuda::entry([&] { vffn::cuda::rope(dev, *static_cast<const vffn::RopeArgs*>(args), 1.f); });
}

VFFN_CUDA_EXPORT int vffn_cuda_rope_backward(int dev, const void* args) {
  return vffn::cuda::entry([&] { vffn::cuda::rope(dev, *static_cast<const vffn::RopeArgs*>(args), -1.f); });
}
