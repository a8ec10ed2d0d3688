// elementwise tensor ops on CUDA: strided copy with dtype conversion, and fill.
// the same semantics as native/cpu/tensor_ops (bf16 rounds to nearest even, int32 only to int32).
#include "../core/ops.h"
#include "common.cuh"

namespace vffn::cuda {

namespace {

// shape and strides by value; element i (row-major over the view's own shape) lives at
// offset(i). dst and src may differ in shape when their element counts match.
struct Layout {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t stride[kMaxDims];
};

Layout layout_of(const View& v) {
  Layout l{};
  l.ndim = v.ndim;
  for (int i = 0; i < v.ndim; i++) {
    l.shape[i] = v.shape[i];
    l.stride[i] = v.stride[i];
  }
  return l;
}

__device__ __forceinline__ int64_t offset_of(const Layout& l, int64_t i) {
  int64_t off = 0;
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; d--) {
    if (d < l.ndim) {
      int64_t s = l.shape[d];
      off += (i % s) * l.stride[d];
      i /= s;
    }
  }
  return off;
}

__global__ void copy_kernel(void* dst, int dst_dt, Layout dl, const void* src, int src_dt, Layout sl, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t so = offset_of(sl, i), d = offset_of(dl, i);
    if (dst_dt == I32)
      static_cast<int32_t*>(dst)[d] = static_cast<const int32_t*>(src)[so];
    else if (dst_dt == src_dt && dst_dt == BF16)
      static_cast<uint16_t*>(dst)[d] = static_cast<const uint16_t*>(src)[so];  // bits kept, NaN payloads too
    else
      store_f(dst, dst_dt, d, load_f(src, src_dt, so));
  }
}

__global__ void fill_kernel(void* dst, int dt, Layout l, int64_t n, uint32_t bits) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = offset_of(l, i);
    if (dt == BF16)
      static_cast<uint16_t*>(dst)[o] = uint16_t(bits);
    else
      static_cast<uint32_t*>(dst)[o] = bits;
  }
}

}  // namespace
}  // namespace vffn::cuda

using namespace vffn;
using namespace vffn::cuda;

VFFN_CUDA_EXPORT int vffn_cuda_copy(int dev, const void* args) {
  return entry([&] {
    const CopyArgs& a = *static_cast<const CopyArgs*>(args);
    int64_t n = a.dst.numel();
    require(n == a.src.numel(), "copy: element counts differ");
    require((a.dst.dtype == I32) == (a.src.dtype == I32), "copy: int32 converts only to int32");
    require(a.dst.ndim <= kMaxDims && a.src.ndim <= kMaxDims, "copy: too many dimensions");
    cudaStream_t st = stream(dev);
    if (n == 0) return;
    if (a.dst.dtype == a.src.dtype && a.dst.contiguous() && a.src.contiguous()) {
      check(cudaMemcpyAsync(a.dst.data, a.src.data, size_t(n * dtype_size(a.dst.dtype)), cudaMemcpyDeviceToDevice, st),
            "copy");
      return;
    }
    copy_kernel<<<blocks_for(n, 256), 256, 0, st>>>(a.dst.data, a.dst.dtype, layout_of(a.dst), a.src.data,
                                                     a.src.dtype, layout_of(a.src), n);
    check_launch("copy");
  });
}

VFFN_CUDA_EXPORT int vffn_cuda_fill(int dev, const void* args) {
  return entry([&] {
    const FillArgs& a = *static_cast<const FillArgs*>(args);
    require(a.dst.ndim <= kMaxDims, "fill: too many dimensions");
    cudaStream_t st = stream(dev);
    int64_t n = a.dst.numel();
    if (n == 0) return;
    // the value is converted once on the host, exactly as the CPU backend converts it
    uint32_t bits;
    if (a.dst.dtype == I32) {
      int32_t v = int32_t(a.value);
      std::memcpy(&bits, &v, 4);
    } else {
      float f = float(a.value);
      if (a.dst.dtype == BF16)
        bits = f32_to_bf16(f);
      else
        std::memcpy(&bits, &f, 4);
    }
    fill_kernel<<<blocks_for(n, 256), 256, 0, st>>>(a.dst.data, a.dst.dtype, layout_of(a.dst), n, bits);
    check_launch("fill");
  });
}
