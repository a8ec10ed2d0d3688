// dtypes and the bfloat16 conversions every backend shares.
#pragma once
#include <cstdint>
#include <cstring>

namespace vffn {

enum DType : int32_t { F32 = 0, BF16 = 1, I32 = 2 };

inline int64_t dtype_size(int32_t dt) { return dt == BF16 ? 2 : 4; }
inline const char* dtype_name(int32_t dt) {
  return dt == F32 ? "float32" : dt == BF16 ? "bfloat16" : dt == I32 ? "int32" : "unknown";
}

// round to nearest even; NaN stays NaN (quiet bit forced so rounding cannot turn it into inf)
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace vffn
