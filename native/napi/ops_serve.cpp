// entry points of the serving ops: writes into a paged KV cache, attention over it, sampling.
// checks what memory safety needs (lib/lm_ops.ts checks first with kinder messages); the ids,
// slots, lengths and block tables are data, checked by the kernels (errors belong to tensors).
#include <string>

#include "../core/lm_args.h"
#include "../cpu/lm.h"
#include "common.h"

namespace vffn::napi {

namespace {

using std::to_string;

void f32_rows(const TensorArg& t, const char* name, int ndim) {
  need(t.meta.ndim == ndim, "ERR_SHAPE", std::string(name) + ": expected " + to_string(ndim) + " dimensions");
  need(t.meta.dtype == F32, "ERR_DTYPE", std::string(name) + ": expected float32");
  need(t.meta.shape[ndim - 1] <= 1 || t.meta.stride[ndim - 1] == 1, "ERR_ARGUMENT", std::string(name) + ": the last dimension must be contiguous");
}
void i32(const TensorArg& t, const char* name, int ndim) {
  need(t.meta.ndim == ndim && t.meta.dtype == I32, "ERR_DTYPE", std::string(name) + ": expected an int32 tensor of " + to_string(ndim) + " dimensions");
  need(t.meta.contiguous(), "ERR_ARGUMENT", std::string(name) + ": expected a contiguous tensor");
}
void pool(const TensorArg& t, const char* name) {
  f32_rows(t, name, 3);
  need(t.meta.contiguous(), "ERR_ARGUMENT", std::string(name) + ": expected a contiguous pool");
}
void one_device(const TensorArg& ref, std::initializer_list<const TensorArg*> ts) {
  for (auto* t : ts) need(t->device == ref.device, "ERR_DEVICE", std::string(t->name) + ": all tensors of an op must be on one device");
}
bool same_shape(const TensorArg& a, const TensorArg& b) {
  if (a.meta.ndim != b.meta.ndim) return false;
  for (int i = 0; i < a.meta.ndim; i++)
    if (a.meta.shape[i] != b.meta.shape[i]) return false;
  return true;
}

// kvWrite(kPool [NB, BS, D], vPool, k [T, D], v [T, D], slots int32 [T])
Napi::Value KvWrite(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg kp = tensor_arg(info[0], "kPool"), vp = tensor_arg(info[1], "vPool"), k = tensor_arg(info[2], "k"),
              v = tensor_arg(info[3], "v"), slots = tensor_arg(info[4], "slots");
    pool(kp, "kPool"), pool(vp, "vPool"), f32_rows(k, "k", 2), f32_rows(v, "v", 2), i32(slots, "slots", 1);
    need(same_shape(kp, vp), "ERR_SHAPE", "vPool: expected the shape of kPool");
    need(same_shape(k, v), "ERR_SHAPE", "v: expected the shape of k");
    need(k.meta.shape[1] == kp.meta.shape[2], "ERR_SHAPE", "k: expected rows of the pool's width");
    need(slots.meta.shape[0] == k.meta.shape[0], "ERR_SHAPE", "slots: expected one slot per row of k");
    one_device(kp, {&vp, &k, &v, &slots});
    Device* dev = kp.device;
    enqueue(dev, "kv_write", Io().inout(kp).inout(vp).in(k).in(v).in(slots), [=] {
      KvWriteArgs a{kp.view(), vp.view(), k.view(), v.view(), slots.view()};
      dev->type == kCPU ? cpu::kv_write(a) : cuda_call(dev, "kv_write", &a);
    });
    return info.Env().Undefined();
  });
}

// pagedAttention(out [B, Sq, D], q [B, Sq, D], kPool, vPool, blockTable int32 [B, MB], lens int32 [B], heads, scale)
Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg out = tensor_arg(info[0], "out"), q = tensor_arg(info[1], "q"), kp = tensor_arg(info[2], "kPool"),
              vp = tensor_arg(info[3], "vPool"), table = tensor_arg(info[4], "blockTable"), lens = tensor_arg(info[5], "lens");
    int64_t H = int_arg(info[6], "heads");
    float scale = float(num_arg(info[7], "scale"));
    f32_rows(out, "out", 3), f32_rows(q, "q", 3), pool(kp, "kPool"), pool(vp, "vPool"), i32(table, "blockTable", 2), i32(lens, "lens", 1);
    need(same_shape(out, q), "ERR_SHAPE", "out: expected the shape of q");
    need(same_shape(kp, vp), "ERR_SHAPE", "vPool: expected the shape of kPool");
    need(q.meta.shape[2] == kp.meta.shape[2], "ERR_SHAPE", "q: expected rows of the pool's width");
    need(H >= 1 && q.meta.shape[2] % H == 0, "ERR_SHAPE", "heads: the width does not split into that many heads");
    need(table.meta.shape[0] == q.meta.shape[0] && lens.meta.shape[0] == q.meta.shape[0], "ERR_SHAPE",
         "blockTable: expected one row (and one length) per sequence of q");
    one_device(q, {&out, &kp, &vp, &table, &lens});
    Device* dev = q.device;
    enqueue(dev, "paged_attention", Io().out(out).in(q).in(kp).in(vp).in(table).in(lens), [=] {
      PagedAttentionArgs a{out.view(), q.view(), kp.view(), vp.view(), table.view(), lens.view(), H, scale};
      dev->type == kCPU ? cpu::paged_attention(a) : cuda_call(dev, "paged_attention", &a);
    });
    return info.Env().Undefined();
  });
}

// sample(ids int32 [B], logprobs float32 [B], logits [B, V], params float32 [B, 4])
Napi::Value Sample(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg ids = tensor_arg(info[0], "ids"), lp = tensor_arg(info[1], "logprobs"), x = tensor_arg(info[2], "logits"),
              params = tensor_arg(info[3], "params");
    i32(ids, "ids", 1), f32_rows(lp, "logprobs", 1), f32_rows(x, "logits", 2), f32_rows(params, "params", 2);
    const int64_t B = x.meta.shape[0];
    need(x.meta.shape[1] >= 1, "ERR_SHAPE", "logits: expected at least one id per row");
    need(ids.meta.shape[0] == B && lp.meta.shape[0] == B, "ERR_SHAPE", "ids: expected one id (and logprob) per row of logits");
    need(params.meta.shape[0] == B && params.meta.shape[1] == 4, "ERR_SHAPE", "params: expected [B, 4]");
    one_device(x, {&ids, &lp, &params});
    // lib/serve_ops.ts samples CUDA logits on the CPU until the backend has the op
    need(x.device->type == kCPU, "ERR_DEVICE", "logits: the sample op runs on the CPU");
    enqueue(x.device, "sample", Io().out(ids).out(lp).in(x).in(params), [=] {
      cpu::sample(SampleArgs{ids.view(), lp.view(), x.view(), params.view()});
    });
    return info.Env().Undefined();
  });
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("kvWrite", Napi::Function::New(env, KvWrite));
  exports.Set("pagedAttention", Napi::Function::New(env, PagedAttention));
  exports.Set("sample", Napi::Function::New(env, Sample));
}
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
