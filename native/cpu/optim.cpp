// AdamW with decoupled weight decay and the global gradient-norm clip it reads, in place on
// float32 parameters and moments; axpy for gradient bookkeeping.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/dtype.h"
#include "lm.h"
#include "pool.h"

namespace vffn::cpu {

namespace {
constexpr int64_t kChunk = 1 << 14;

// sum of squares in fixed chunks, each in double, added in chunk order: thread-count independent
double sum_squares(const View& g) {
  int64_t n = g.numel();
  const float* p = g.ptr<float>();
  int64_t nc = (n + kChunk - 1) / kChunk;
  std::vector<double> part(size_t(nc), 0.0);
  parallel_for(nc, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t c = b; c < e; c++) {
      double s = 0;
      for (int64_t i = c * kChunk, end = std::min(n, i + kChunk); i < end; i++) s += double(p[i]) * double(p[i]);
      part[size_t(c)] = s;
    }
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}
}  // namespace

void grad_norm(const GradNormArgs& a) {
  double s = 0;
  for (int64_t i = 0; i < a.count; i++) s += sum_squares(a.grads[i]);
  double norm = std::sqrt(s);
  double coef = a.max_norm > 0 ? std::min(1.0, double(a.max_norm) / (norm + 1e-6)) : 1.0;
  a.out.ptr<float>()[0] = float(norm);
  a.out.ptr<float>()[1] = float(coef);
}

void adamw_step(const AdamWArgs& a) {
  int64_t n = a.param.numel();
  float* p = a.param.ptr<float>();
  float* m = a.m.ptr<float>();
  float* v = a.v.ptr<float>();
  const float* g = a.grad.ptr<float>();
  // a non-finite global norm would poison every parameter and moment: skip the step instead
  if (a.clip.data && !std::isfinite(a.clip.ptr<float>()[0])) return;
  float clip = a.clip.data ? a.clip.ptr<float>()[1] : 1.f;
  float b1 = a.beta1, b2 = a.beta2;
  float bc1 = float(1.0 - std::pow(double(b1), double(a.step)));
  float bc2 = float(1.0 - std::pow(double(b2), double(a.step)));
  float lr = a.lr, wd = a.weight_decay, eps = a.eps;
  uint16_t* c = a.copy.data ? a.copy.ptr<uint16_t>() : nullptr;
  parallel_for(n, 4096, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) {
      float gi = g[i] * clip;
      float mi = m[i] = b1 * m[i] + (1.f - b1) * gi;
      float vi = v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
      p[i] -= lr * (wd * p[i] + (mi / bc1) / (std::sqrt(vi / bc2) + eps));
      if (c) c[i] = f32_to_bf16(p[i]);
    }
  });
}

void axpy(const AxpyArgs& a) {
  float* y = a.y.ptr<float>();
  const float* x = a.x.ptr<float>();
  float al = a.alpha;
  parallel_for(a.y.numel(), 8192, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; i++) y[i] += al * x[i];
  });
}

}  // namespace vffn::cpu
