// token embedding: gather rows of wte (forward; float32 or bfloat16 weights, float32 out),
// scatter-add into them (backward, float32).
// T tokens, D width, V vocabulary rows.
#include <string>

#include "../core/dtype.h"
#include "../core/error.h"
#include "lm.h"
#include "pool.h"

namespace vffn::cpu {

namespace {
void check_ids(const View& tokens, int64_t V) {
  const int32_t* ids = tokens.ptr<int32_t>();
  for (int64_t t = 0; t < tokens.numel(); t++)
    if (ids[t] < 0 || ids[t] >= V)
      fail("ERR_ARGUMENT", "tokens: id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                               " is outside the vocabulary [0, " + std::to_string(V) + ")");
}
}  // namespace

void embedding_forward(const EmbeddingForwardArgs& a) {
  int64_t T = a.tokens.numel(), D = a.weight.shape[1], V = a.weight.shape[0];
  check_ids(a.tokens, V);
  const int32_t* ids = a.tokens.ptr<int32_t>();
  float* out = a.out.ptr<float>();
  int64_t ldw = a.weight.stride[0], ldo = a.out.stride[0];
  bool bf16 = a.weight.dtype == BF16;
  parallel_for(T, 16, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      float* dst = out + t * ldo;
      if (bf16) {
        const uint16_t* src = a.weight.ptr<uint16_t>() + ids[t] * ldw;
        for (int64_t j = 0; j < D; j++) dst[j] = bf16_to_f32(src[j]);
      } else {
        const float* src = a.weight.ptr<float>() + ids[t] * ldw;
        for (int64_t j = 0; j < D; j++) dst[j] = src[j];
      }
    }
  });
}

// split over columns so each thread owns whole columns of dweight and adds tokens in order:
// the same sum at every thread count, and no two threads touch one element.
void embedding_backward(const EmbeddingBackwardArgs& a) {
  int64_t T = a.tokens.numel(), D = a.dweight.shape[1], V = a.dweight.shape[0];
  check_ids(a.tokens, V);
  const int32_t* ids = a.tokens.ptr<int32_t>();
  const float* g = a.dout.ptr<float>();
  float* dw = a.dweight.ptr<float>();
  int64_t ldw = a.dweight.stride[0], ldg = a.dout.stride[0];
  parallel_for(D, 64, [&](int64_t b, int64_t e, int) {
    for (int64_t t = 0; t < T; t++) {
      float* dst = dw + ids[t] * ldw;
      const float* src = g + t * ldg;
      for (int64_t j = b; j < e; j++) dst[j] += src[j];
    }
  });
}

}  // namespace vffn::cpu
