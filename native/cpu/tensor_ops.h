// elementwise tensor utilities on CPU: strided copy with dtype conversion, fill, seeded randn.
#pragma once
#include <cstdint>

#include "../core/view.h"

namespace vffn::cpu {

// dst and src have the same shape; any strides; dtypes converted (bf16 rounds to nearest even).
void copy(const View& dst, const View& src);
void fill(const View& dst, double value);
// normal(mean, std) from Philox: block b (counter (b low, attempt, b high, 0), key seed) gives elements
// 4b..4b+3 of the flattened tensor by Box-Muller on words (0,1) and (2,3). with truncate > 0 an
// element beyond truncate*std is redrawn with the next attempt until it lands inside.
void randn(const View& dst, uint64_t seed, double mean, double std, double truncate);

}  // namespace vffn::cpu
