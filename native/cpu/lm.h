// CPU kernels of the language-model layers; argument blocks in core/lm_args.h. each layer's
// forward and backward live side by side in one file (embedding, rope, attention, loss, optim).
#pragma once
#include "../core/lm_args.h"

namespace vffn::cpu {

void embedding_forward(const EmbeddingForwardArgs& a);
void embedding_backward(const EmbeddingBackwardArgs& a);

void rope_forward(const RopeArgs& a);
void rope_backward(const RopeArgs& a);

void attention_forward(const AttentionForwardArgs& a);
void attention_backward(const AttentionBackwardArgs& a);

void cross_entropy_forward(const CrossEntropyForwardArgs& a);
void cross_entropy_backward(const CrossEntropyBackwardArgs& a);

void grad_norm(const GradNormArgs& a);
void adamw_step(const AdamWArgs& a);

void axpy(const AxpyArgs& a);

void kv_write(const KvWriteArgs& a);
void paged_attention(const PagedAttentionArgs& a);
void sample(const SampleArgs& a);

}  // namespace vffn::cpu
