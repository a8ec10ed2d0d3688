// causal multi-head attention on CPU, blocked with an online softmax: per (batch, head, query
// block) the scores of one key block at a time, never a full Sq x Sk matrix. backward recomputes
// the probabilities from the saved log-sum-exp, one (batch, head) per task so dk/dv need no atomics.
// B batch, Sq queries, Sk keys, H heads, hd head size; q/k/v rows hold H*hd columns.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/dtype.h"
#include "gemm.h"
#include "lm.h"
#include "pool.h"

namespace vffn::cpu {

namespace {
constexpr int64_t kBq = 64, kBk = 64;

// a head's rows inside a [B, S, H*hd] view
struct Rows {
  float* p;
  int64_t ld;
  float* at(int64_t s) const { return p + s * ld; }
};
Rows head_rows(const View& x, int64_t b, int64_t h, int64_t hd) {
  return Rows{x.ptr<float>() + b * x.stride[0] + h * hd, x.stride[1]};
}
Mat mat(const float* p, int64_t ld, bool trans = false) { return Mat{p, F32, ld, trans, nullptr}; }
}  // namespace

void attention_forward(const AttentionForwardArgs& a) {
  int64_t B = a.q.shape[0], Sq = a.q.shape[1], H = a.heads, hd = a.q.shape[2] / H;
  int64_t nqb = (Sq + kBq - 1) / kBq;
  float scale = a.scale;
  parallel_tasks(B * H * nqb, [&](int64_t task, int) {
    int64_t b = task / (H * nqb), h = (task / nqb) % H, s0 = (task % nqb) * kBq;
    int64_t bq = std::min(kBq, Sq - s0);
    Rows Q = head_rows(a.q, b, h, hd), K = head_rows(a.k, b, h, hd), V = head_rows(a.v, b, h, hd);
    Rows O = head_rows(a.out, b, h, hd);
    std::vector<float> S(size_t(bq * kBk)), acc(size_t(bq * hd), 0.f);
    std::vector<float> m(size_t(bq), -std::numeric_limits<float>::infinity()), l(size_t(bq), 0.f);
    int64_t kend = a.q_offset + s0 + bq;  // keys [0, kend) are visible to some query of the block
    for (int64_t k0 = 0; k0 < kend; k0 += kBk) {
      int64_t bk = std::min(kBk, kend - k0);
      gemm(bq, bk, hd, scale, mat(Q.at(s0), Q.ld), mat(K.at(k0), K.ld, true), 0.f, S.data(), kBk, false);
      for (int64_t i = 0; i < bq; i++) {
        float* srow = S.data() + i * kBk;
        int64_t last = a.q_offset + s0 + i - k0;  // last visible key of this row in the block
        int64_t nv = std::min(bk, last + 1);
        float mx = m[size_t(i)];
        for (int64_t j = 0; j < nv; j++) mx = std::max(mx, srow[j]);
        float alpha = std::exp(m[size_t(i)] - mx);  // exp(-inf) = 0 on the first block
        float sum = 0.f;
        for (int64_t j = 0; j < nv; j++) sum += (srow[j] = std::exp(srow[j] - mx));
        for (int64_t j = nv; j < bk; j++) srow[j] = 0.f;
        l[size_t(i)] = l[size_t(i)] * alpha + sum;
        m[size_t(i)] = mx;
        float* arow = acc.data() + i * hd;
        for (int64_t c = 0; c < hd; c++) arow[c] *= alpha;
      }
      gemm(bq, hd, bk, 1.f, mat(S.data(), kBk), mat(V.at(k0), V.ld), 1.f, acc.data(), hd, false);
    }
    float* lse = a.lse.ptr<float>() + b * a.lse.stride[0] + h * a.lse.stride[1];
    for (int64_t i = 0; i < bq; i++) {
      float inv = 1.f / l[size_t(i)];
      float* orow = O.at(s0 + i);
      for (int64_t c = 0; c < hd; c++) orow[c] = acc[size_t(i * hd + c)] * inv;
      lse[(s0 + i) * a.lse.stride[2]] = m[size_t(i)] + std::log(l[size_t(i)]);
    }
  });
}

void attention_backward(const AttentionBackwardArgs& a) {
  int64_t B = a.q.shape[0], Sq = a.q.shape[1], Sk = a.k.shape[1], H = a.heads, hd = a.q.shape[2] / H;
  float scale = a.scale;
  parallel_tasks(B * H, [&](int64_t task, int) {
    int64_t b = task / H, h = task % H;
    Rows Q = head_rows(a.q, b, h, hd), K = head_rows(a.k, b, h, hd), V = head_rows(a.v, b, h, hd);
    Rows O = head_rows(a.out, b, h, hd), dO = head_rows(a.dout, b, h, hd);
    Rows dQ = head_rows(a.dq, b, h, hd), dK = head_rows(a.dk, b, h, hd), dV = head_rows(a.dv, b, h, hd);
    const float* lse = a.lse.ptr<float>() + b * a.lse.stride[0] + h * a.lse.stride[1];
    int64_t lst = a.lse.stride[2];
    // delta_i = <dO_i, O_i>: the softmax backward's row term
    std::vector<float> delta(static_cast<size_t>(Sq)), dq(static_cast<size_t>(Sq * hd), 0.f);
    for (int64_t i = 0; i < Sq; i++) {
      float d = 0.f;
      for (int64_t c = 0; c < hd; c++) d += dO.at(i)[c] * O.at(i)[c];
      delta[size_t(i)] = d;
    }
    std::vector<float> P(size_t(kBq * kBk)), dP(size_t(kBq * kBk)), dk(size_t(kBk * hd)), dv(size_t(kBk * hd));
    for (int64_t k0 = 0; k0 < Sk; k0 += kBk) {
      int64_t bk = std::min(kBk, Sk - k0);
      std::fill(dk.begin(), dk.end(), 0.f);
      std::fill(dv.begin(), dv.end(), 0.f);
      int64_t qstart = std::max<int64_t>(0, k0 - a.q_offset);  // earlier queries see none of these keys
      qstart -= qstart % kBq;
      for (int64_t s0 = qstart; s0 < Sq; s0 += kBq) {
        int64_t bq = std::min(kBq, Sq - s0);
        gemm(bq, bk, hd, scale, mat(Q.at(s0), Q.ld), mat(K.at(k0), K.ld, true), 0.f, P.data(), kBk, false);
        for (int64_t i = 0; i < bq; i++) {
          float* prow = P.data() + i * kBk;
          int64_t nv = std::max<int64_t>(0, std::min(bk, a.q_offset + s0 + i - k0 + 1));
          float L = lse[(s0 + i) * lst];
          for (int64_t j = 0; j < nv; j++) prow[j] = std::exp(prow[j] - L);
          for (int64_t j = nv; j < bk; j++) prow[j] = 0.f;
        }
        // dV += P^T dO; dP = dO V^T
        gemm(bk, hd, bq, 1.f, mat(P.data(), kBk, true), mat(dO.at(s0), dO.ld), 1.f, dv.data(), hd, false);
        gemm(bq, bk, hd, 1.f, mat(dO.at(s0), dO.ld), mat(V.at(k0), V.ld, true), 0.f, dP.data(), kBk, false);
        for (int64_t i = 0; i < bq; i++) {
          float* prow = P.data() + i * kBk;
          const float* dprow = dP.data() + i * kBk;
          float d = delta[size_t(s0 + i)];
          for (int64_t j = 0; j < bk; j++) prow[j] = prow[j] * (dprow[j] - d);  // now dS
        }
        gemm(bq, hd, bk, scale, mat(P.data(), kBk), mat(K.at(k0), K.ld), 1.f, dq.data() + s0 * hd, hd, false);
        gemm(bk, hd, bq, scale, mat(P.data(), kBk, true), mat(Q.at(s0), Q.ld), 1.f, dk.data(), hd, false);
      }
      for (int64_t j = 0; j < bk; j++)
        for (int64_t c = 0; c < hd; c++) {
          dK.at(k0 + j)[c] = dk[size_t(j * hd + c)];
          dV.at(k0 + j)[c] = dv[size_t(j * hd + c)];
        }
    }
    for (int64_t i = 0; i < Sq; i++)
      for (int64_t c = 0; c < hd; c++) dQ.at(i)[c] = dq[size_t(i * hd + c)];
  });
}

}  // namespace vffn::cpu
