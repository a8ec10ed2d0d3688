// fused softmax cross-entropy over a vocabulary: T tokens, V classes. forward keeps each row's
// log-sum-exp; backward writes (softmax - onehot) scaled by dloss / counted tokens.
#include <cmath>
#include <string>
#include <vector>

#include "../core/error.h"
#include "lm.h"
#include "pool.h"

namespace vffn::cpu {

namespace {
// counted tokens; a target outside [0, V) that is not ignore_index is the caller's mistake
int64_t count_targets(const View& targets, int64_t V, int64_t ignore) {
  const int32_t* tg = targets.ptr<int32_t>();
  int64_t n = 0;
  for (int64_t t = 0; t < targets.numel(); t++) {
    if (tg[t] == ignore) continue;
    if (tg[t] < 0 || tg[t] >= V)
      fail("ERR_ARGUMENT", "targets: id " + std::to_string(tg[t]) + " at position " + std::to_string(t) +
                               " is outside the vocabulary [0, " + std::to_string(V) + ")");
    n++;
  }
  return n;
}
}  // namespace

void cross_entropy_forward(const CrossEntropyForwardArgs& a) {
  int64_t T = a.logits.shape[0], V = a.logits.shape[1], ld = a.logits.stride[0];
  int64_t n = count_targets(a.targets, V, a.ignore_index);
  const int32_t* tg = a.targets.ptr<int32_t>();
  const float* x = a.logits.ptr<float>();
  float* lse = a.lse.ptr<float>();
  std::vector<double> row_loss(size_t(T), 0.0);
  parallel_for(T, 4, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      const float* r = x + t * ld;
      float mx = -INFINITY;
      for (int64_t j = 0; j < V; j++) mx = std::max(mx, r[j]);
      double s = 0;
      for (int64_t j = 0; j < V; j++) s += std::exp(double(r[j] - mx));
      double l = double(mx) + std::log(s);
      lse[t] = float(l);
      if (tg[t] != a.ignore_index) row_loss[size_t(t)] = l - double(r[tg[t]]);
    }
  });
  double total = 0;  // summed in token order: the same at every thread count
  for (int64_t t = 0; t < T; t++) total += row_loss[size_t(t)];
  a.loss.ptr<float>()[0] = n > 0 ? float(total / double(n)) : 0.f;
}

void cross_entropy_backward(const CrossEntropyBackwardArgs& a) {
  int64_t T = a.logits.shape[0], V = a.logits.shape[1], ld = a.logits.stride[0], ldd = a.dlogits.stride[0];
  int64_t n = count_targets(a.targets, V, a.ignore_index);
  const int32_t* tg = a.targets.ptr<int32_t>();
  const float* x = a.logits.ptr<float>();
  const float* lse = a.lse.ptr<float>();
  float* d = a.dlogits.ptr<float>();
  float g = n > 0 ? a.dloss / float(n) : 0.f;
  parallel_for(T, 4, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; t++) {
      const float* r = x + t * ld;
      float* o = d + t * ldd;
      if (tg[t] == a.ignore_index) {
        for (int64_t j = 0; j < V; j++) o[j] = 0.f;
        continue;
      }
      float L = lse[t];
      for (int64_t j = 0; j < V; j++) o[j] = g * std::exp(r[j] - L);
      o[tg[t]] -= g;
    }
  });
}

}  // namespace vffn::cpu
