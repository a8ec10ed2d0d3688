#include "tensor_ops.h"

#include <cmath>
#include <cstring>

#include "../core/dtype.h"
#include "../core/error.h"
#include "../core/philox.h"
#include "pool.h"

namespace vffn::cpu {

namespace {

inline double get(const View& v, int64_t off) {
  switch (v.dtype) {
    case F32: return v.ptr<float>()[off];
    case BF16: return bf16_to_f32(v.ptr<uint16_t>()[off]);
    default: return v.ptr<int32_t>()[off];
  }
}
inline void put(const View& v, int64_t off, double x) {
  switch (v.dtype) {
    case F32: v.ptr<float>()[off] = float(x); break;
    case BF16: v.ptr<uint16_t>()[off] = f32_to_bf16(float(x)); break;
    default: v.ptr<int32_t>()[off] = int32_t(x); break;
  }
}
// offset of flat index i in a strided view
inline int64_t offset_of(const View& v, int64_t i) {
  int64_t off = 0;
  for (int d = v.ndim - 1; d >= 0; d--) {
    int64_t s = v.shape[d];
    off += (i % s) * v.stride[d];
    i /= s;
  }
  return off;
}

}  // namespace

void copy(const View& dst, const View& src) {
  int64_t n = dst.numel();
  VFFN_CHECK(n == src.numel(), "ERR_SHAPE", "copy: source and destination sizes differ");
  if (dst.contiguous() && src.contiguous() && dst.dtype == src.dtype) {
    std::memmove(dst.data, src.data, size_t(n * dtype_size(dst.dtype)));
    return;
  }
  if (n == 0) return;
  parallel_for(n, 1 << 15, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      int64_t so = offset_of(src, i), d = offset_of(dst, i);
      if (dst.dtype == I32 && src.dtype == I32)
        dst.ptr<int32_t>()[d] = src.ptr<int32_t>()[so];
      else
        put(dst, d, get(src, so));
    }
  });
}

void fill(const View& dst, double value) {
  int64_t n = dst.numel();
  parallel_for(n, 1 << 15, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) put(dst, offset_of(dst, i), value);
  });
}

void randn(const View& dst, uint64_t seed, double mean, double std, double truncate) {
  int64_t n = dst.numel();
  int64_t blocks = (n + 3) / 4;
  const double two_pi = 6.283185307179586;
  parallel_for(blocks, 1024, [&](int64_t b0, int64_t b1, int) {
    for (int64_t b = b0; b < b1; b++) {
      for (int j = 0; j < 4 && 4 * b + j < n; j++) {
        double z = 0;
        for (uint32_t attempt = 0;; attempt++) {
          U32x4 r = philox4x32_10(uint32_t(b), uint32_t(attempt), uint32_t(uint64_t(b) >> 32), 0, seed);
          int p = j & 2;  // words (0,1) feed elements 0,1; words (2,3) feed elements 2,3
          double u1 = philox_uniform(r.v[p]), u2 = philox_uniform(r.v[p + 1]);
          double rad = std::sqrt(-2.0 * std::log(u1));
          z = (j & 1) ? rad * std::sin(two_pi * u2) : rad * std::cos(two_pi * u2);
          if (truncate <= 0 || std::fabs(z) <= truncate || attempt >= 1000) break;
        }
        put(dst, offset_of(dst, 4 * b + j), mean + std * z);
      }
    }
  });
}

}  // namespace vffn::cpu
