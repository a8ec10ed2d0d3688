// rotary position embedding, non-interleaved ("rotate half"), in place on [B, S, H*hd].
// backward is the inverse rotation (the rotation is orthogonal).
#include <cmath>
#include <vector>

#include "lm.h"
#include "pool.h"

namespace vffn::cpu {

namespace {
void rope_apply(const RopeArgs& a, float sign) {
  int64_t B = a.x.shape[0], S = a.x.shape[1], H = a.heads, hd = a.x.shape[2] / H, half = hd / 2;
  // angles in double so long positions keep their precision, then one float cos/sin table row per token
  std::vector<double> inv(size_t(half > 0 ? half : 1));
  for (int64_t i = 0; i < half; i++) inv[size_t(i)] = std::pow(double(a.theta), -2.0 * double(i) / double(hd));
  float* x = a.x.ptr<float>();
  int64_t sb = a.x.stride[0], ss = a.x.stride[1];
  parallel_for(B * S, 8, [&](int64_t b0, int64_t e0, int) {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t r = b0; r < e0; r++) {
      int64_t bi = r / S, si = r % S;
      double pos = double((a.starts.data ? int64_t(a.starts.ptr<int32_t>()[bi]) : a.pos_offset) + si);
      for (int64_t i = 0; i < half; i++) {
        double ang = pos * inv[size_t(i)];
        c[size_t(i)] = float(std::cos(ang));
        s[size_t(i)] = sign * float(std::sin(ang));
      }
      float* row = x + bi * sb + si * ss;
      for (int64_t h = 0; h < H; h++) {
        float* p = row + h * hd;
        for (int64_t i = 0; i < half; i++) {
          float u = p[i], w = p[i + half];
          p[i] = u * c[size_t(i)] - w * s[size_t(i)];
          p[i + half] = w * c[size_t(i)] + u * s[size_t(i)];
        }
      }
    }
  });
}
}  // namespace

void rope_forward(const RopeArgs& a) { rope_apply(a, 1.f); }
void rope_backward(const RopeArgs& a) { rope_apply(a, -1.f); }

}  // namespace vffn::cpu
