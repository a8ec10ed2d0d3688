#include "tensor_ops.h"

#include <algorithm>
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
// offset of element i over the first `dims` dimensions of a strided view, in row-major order
inline int64_t offset_in(const View& v, int dims, int64_t i) {
  int64_t off = 0;
  for (int d = dims - 1; d >= 0; d--) {
    int64_t s = v.shape[d];
    off += (i % s) * v.stride[d];
    i /= s;
  }
  return off;
}
// offset of flat index i
inline int64_t offset_of(const View& v, int64_t i) { return offset_in(v, v.ndim, i); }
// offset of row r's first element (rows: every index but the last)
inline int64_t row_offset(const View& v, int64_t r) { return offset_in(v, v.ndim - 1, r); }

template <class D, class S, class Cvt>
void copy_row(D* dst, int64_t ds, const S* src, int64_t ss, int64_t n, Cvt cvt) {
  for (int64_t j = 0; j < n; j++) dst[j * ds] = cvt(src[j * ss]);
}

// one row of `cols` elements, dtypes converted; the inner loops are typed so they vectorise
void copy_row_any(const View& dst, int64_t doff, const View& src, int64_t soff, int64_t cols) {
  int64_t ds = dst.ndim ? dst.stride[dst.ndim - 1] : 1, ss = src.ndim ? src.stride[src.ndim - 1] : 1;
  auto same = [](auto v) { return v; };
  if (dst.dtype == F32 && src.dtype == F32)
    copy_row(dst.ptr<float>() + doff, ds, src.ptr<float>() + soff, ss, cols, same);
  else if (dst.dtype == BF16 && src.dtype == BF16)
    copy_row(dst.ptr<uint16_t>() + doff, ds, src.ptr<uint16_t>() + soff, ss, cols, same);
  else if (dst.dtype == I32 && src.dtype == I32)
    copy_row(dst.ptr<int32_t>() + doff, ds, src.ptr<int32_t>() + soff, ss, cols, same);
  else if (dst.dtype == F32 && src.dtype == BF16)
    copy_row(dst.ptr<float>() + doff, ds, src.ptr<uint16_t>() + soff, ss, cols, [](uint16_t h) { return bf16_to_f32(h); });
  else if (dst.dtype == BF16 && src.dtype == F32)
    copy_row(dst.ptr<uint16_t>() + doff, ds, src.ptr<float>() + soff, ss, cols, [](float f) { return f32_to_bf16(f); });
  else
    for (int64_t j = 0; j < cols; j++) put(dst, doff + j * ds, get(src, soff + j * ss));
}

bool same_shape(const View& a, const View& b) {
  if (a.ndim != b.ndim) return false;
  for (int d = 0; d < a.ndim; d++)
    if (a.shape[d] != b.shape[d]) return false;
  return true;
}

}  // namespace

void copy(const View& dst, const View& src) {
  int64_t n = dst.numel();
  VFFN_CHECK(n == src.numel(), "ERR_SHAPE", "copy: source and destination sizes differ");
  if (n == 0) return;
  if (dst.contiguous() && src.contiguous() && dst.dtype == src.dtype) {
    std::memmove(dst.data, src.data, size_t(n * dtype_size(dst.dtype)));
    return;
  }
  if (same_shape(dst, src) && dst.ndim >= 1) {
    int64_t cols = dst.shape[dst.ndim - 1], rows = n / cols;
    parallel_for(rows, std::max<int64_t>(1, (1 << 15) / cols), [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; r++) copy_row_any(dst, row_offset(dst, r), src, row_offset(src, r), cols);
    });
    return;
  }
  // same elements, other shapes (a reshape of a strided view): element by element
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
  if (n == 0) return;
  // convert once, then write bits: the same value every element, at memset speed when contiguous
  View one;
  uint32_t bits = 0;
  one.data = &bits;
  one.dtype = dst.dtype;
  put(one, 0, value);
  int64_t cols = dst.ndim ? dst.shape[dst.ndim - 1] : 1, rows = n / cols;
  int64_t cs = dst.ndim ? dst.stride[dst.ndim - 1] : 1;
  if (dst.contiguous()) rows = 1, cols = n, cs = 1;
  parallel_for(rows * cols, 1 << 16, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e;) {
      int64_t r = i / cols, c = i % cols, m = std::min(e - i, cols - c);
      int64_t off = (dst.contiguous() ? 0 : row_offset(dst, r)) + c * cs;
      if (dst.dtype == BF16) {
        uint16_t* p = dst.ptr<uint16_t>() + off;
        for (int64_t j = 0; j < m; j++) p[j * cs] = uint16_t(bits);
      } else {
        uint32_t* p = static_cast<uint32_t*>(dst.data) + off;
        for (int64_t j = 0; j < m; j++) p[j * cs] = bits;
      }
      i += m;
    }
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
