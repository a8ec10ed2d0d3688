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
// starts (int32 [B], may have data == nullptr): row b's token s sits at starts[b] + s instead
// (ragged batches when serving).
struct RopeArgs {
  View x;
  int64_t heads;
  int64_t pos_offset;
  float theta;
  View starts;
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
// global norm) is not finite, nothing is changed: the step is skipped. copy (bf16, the param's size,
// contiguous; data == nullptr: none) receives the updated param rounded to nearest even, in the same
// pass, so bf16-mixed training's compute copy never differs from its float32 master.
struct AdamWArgs {
  View param, m, v;
  View grad, clip;
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  View copy;
};

// ---- serving: a paged KV cache and sampling on the device ----
// a pool holds NB blocks of BS token rows: k_pool, v_pool [NB, BS, D]; flat slot s is row s % BS of
// block s / BS.

// kv_write: k_pool[slot[t]] = k[t], v_pool[slot[t]] = v[t] for k, v [T, D] (rows may be strided,
// last stride 1), slots int32 [T]. a slot outside [0, NB*BS) fails before anything is written.
struct KvWriteArgs {
  View k_pool, v_pool;
  View k, v, slots;
};

// paged_attention: causal attention of q [B, Sq, H*hd] over each sequence's keys in the pool.
// block_table int32 [B, MB]: sequence b's key j is at flat slot block_table[b, j / BS] * BS + j % BS;
// lens int32 [B]: sequence b has lens[b] keys (this step's included); query s is at position
// lens[b] - Sq + s and sees keys 0..that position. out [B, Sq, H*hd]. inference only. a length
// outside [Sq, MB*BS] or a needed block outside [0, NB) fails before anything is written.
struct PagedAttentionArgs {
  View out;
  View q, k_pool, v_pool, block_table, lens;
  int64_t heads;
  float scale;
};

// sample: one id per row of logits [B, V] with params float32 [B, 4] = (temperature, top_k, top_p,
// u): temperature 0 is argmax (ties: lowest id). otherwise z = logits / temperature; the kept set
// is the top_k largest z (0: all; ties broken by lower id), then, when top_p < 1, the shortest
// prefix of those in descending z whose softmax mass reaches top_p (at least one); weights
// w = exp(z - max z) over the kept set, r = u * sum(w), and the id is the first kept id in
// ascending id order whose running sum of w exceeds r (the last kept id if none). in double.
// ids int32 [B]; logprobs float32 [B] = log_softmax(logits)[id] (temperature 1, unfiltered).
struct SampleArgs {
  View ids, logprobs;
  View logits, params;
};

// axpy: y += alpha * x, same element count, both contiguous (residual gradients, accumulation)
struct AxpyArgs {
  View y;
  View x;
  float alpha;
};

}  // namespace vffn
