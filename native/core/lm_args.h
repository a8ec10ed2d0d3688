// argument blocks of the language-model ops (embedding, rotary, attention, cross-entropy, AdamW,
// gradient-norm clipping), shared by the CPU backend and the CUDA library
// (vffn_cuda_<name>(device, const XArgs*)). order: outputs, inputs, saved values, sizes; gradients
// carry a `d` prefix. every float tensor is float32 unless a field says otherwise; token ids int32.
#pragma once
#include <cstdint>

#include "view.h"

namespace vffn {

// embedding_forward: out[t, :] = weight[tokens[t], :]. out [T, D], weight [V, D] (f32|bf16), tokens [T].
// an id outside [0, V) fails with ERR_ARGUMENT before anything is written.
struct EmbeddingForwardArgs {
  View out;
  View weight, tokens;
};

// embedding_backward: dweight[tokens[t], :] += dout[t, :], summed in token order (deterministic).
struct EmbeddingBackwardArgs {
  View dweight;
  View dout, tokens;
};

// rope_forward / rope_backward, in place on x [B, S, H*hd] (rows may be strided, last stride 1).
// head h of token s at position pos = pos_offset + s: for i < hd/2, angle = pos * theta^(-2i/hd),
// (a, b) = (x[i], x[i + hd/2]) -> (a cos - b sin, b cos + a sin) ("rotate half", non-interleaved).
// backward applies the inverse rotation to the gradient.
struct RopeArgs {
  View x;
  int64_t heads;
  int64_t pos_offset;
  float theta;
};

// attention_forward: causal multi-head softmax attention, no T x T matrix stored.
// q [B, Sq, H*hd], k and v [B, Sk, H*hd] (strided rows allowed, last stride 1); query s sits at
// position q_offset + s and sees keys 0..q_offset + s (q_offset = Sk - Sq when decoding with a cache).
// out [B, Sq, H*hd]; lse [B, H, Sq] the log-sum-exp of each query's scaled scores (for backward).
struct AttentionForwardArgs {
  View out, lse;
  View q, k, v;
  int64_t heads;
  int64_t q_offset;
  float scale;  // usually 1/sqrt(hd)
};

// attention_backward: dq, dk, dv (same shapes as q, k, v) are overwritten.
struct AttentionBackwardArgs {
  View dq, dk, dv;
  View dout;
  View q, k, v, out, lse;
  int64_t heads;
  int64_t q_offset;
  float scale;
};

// cross_entropy_forward: loss [1] = mean over counted tokens of logsumexp(logits[t]) - logits[t, target[t]];
// tokens whose target equals ignore_index (if ignore_index < 0 or >= V it may match nothing) are
// skipped. lse [T] saved for backward. a target outside [0, V) other than ignore_index fails.
// logits [T, V], targets [T].
struct CrossEntropyForwardArgs {
  View loss, lse;
  View logits, targets;
  int64_t ignore_index;
};

// cross_entropy_backward: dlogits = dloss / count * (softmax(logits) - onehot(target)), zero rows
// for ignored tokens. dlogits may alias logits (written row by row after reading it).
struct CrossEntropyBackwardArgs {
  View dlogits;
  View logits, lse, targets;
  float dloss;
  int64_t ignore_index;
};

// grad_norm: out [2] = (global L2 norm of all grads, clip coefficient min(1, max_norm / (norm + 1e-6))).
// the sum runs in double in a fixed order, so the norm does not depend on the thread count.
// max_norm <= 0 means no clipping (coefficient 1).
struct GradNormArgs {
  View out;
  const View* grads;
  int64_t count;
  float max_norm;
};

// adamw_step (decoupled weight decay), in place on param, m, v (float32, same shape as grad):
// g = grad * clip[1] (clip may have data == nullptr: no clipping), m = b1 m + (1-b1) g,
// v = b2 v + (1-b2) g^2, param -= lr * (weight_decay * param + m_hat / (sqrt(v_hat) + eps)),
// with m_hat = m / (1 - b1^step), v_hat = v / (1 - b2^step). when clip is given and clip[0] (the
// global norm) is not finite, nothing is changed: the step is skipped.
struct AdamWArgs {
  View param, m, v;
  View grad, clip;
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
};

// axpy: y += alpha * x, same element count, both contiguous (residual gradients, accumulation)
struct AxpyArgs {
  View y;
  View x;
  float alpha;
};

}  // namespace vffn
