// virtual expert slices: expert e covers intermediate columns [o_e, o_e + E) of the shared FFN.
// o_e = floor(e * (I - E) / (N - 1)) in exact integer arithmetic; o_0 = 0 when N = 1.
#pragma once
#include <cstdint>

namespace vffn {

inline int64_t expert_offset(int64_t e, int64_t n_experts, int64_t hidden, int64_t expert_hidden) {
  if (n_experts <= 1) return 0;
  return e * (hidden - expert_hidden) / (n_experts - 1);
}

}  // namespace vffn
