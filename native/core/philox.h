// Philox4x32-10, the counter-based generator SPEC.md fixes for Gumbel noise and randn.
// key = 64-bit seed (low, high); counter = 4 words. host and device share this code.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define VFFN_HD __host__ __device__ __forceinline__
#else
#define VFFN_HD inline
#endif

namespace vffn {

struct U32x4 { uint32_t v[4]; };

VFFN_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  *lo = uint32_t(p);
}

VFFN_HD U32x4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint64_t seed) {
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  uint32_t x0 = c0, x1 = c1, x2 = c2, x3 = c3;
  for (int r = 0; r < 10; r++) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, x0, &hi0, &lo0);
    mulhilo32(0xCD9E8D57u, x2, &hi1, &lo1);
    uint32_t y0 = hi1 ^ x1 ^ k0, y1 = lo1, y2 = hi0 ^ x3 ^ k1, y3 = lo0;
    x0 = y0; x1 = y1; x2 = y2; x3 = y3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  U32x4 out;
  out.v[0] = x0; out.v[1] = x1; out.v[2] = x2; out.v[3] = x3;
  return out;
}

// uniform in (0, 1) from the top 24 bits: ((bits >> 8) + 0.5) * 2^-24, exact in double. in float32
// the largest value would round up to 1 and make Gumbel noise infinite once in 2^24 draws.
VFFN_HD double philox_uniform(uint32_t bits) { return (double(bits >> 8) + 0.5) * (1.0 / 16777216.0); }

// Gumbel noise g = -log(-log(u)), taken in double and rounded once, identically on every backend
VFFN_HD float philox_gumbel(uint32_t bits) {
  const double u = philox_uniform(bits);
  return float(-log(-log(u)));
}

}  // namespace vffn
