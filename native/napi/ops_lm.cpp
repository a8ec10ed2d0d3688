// entry points of the language-model ops: embedding, rotary, attention, cross-entropy, grad
// norm, AdamW. each checks what memory safety needs (lib/ checks first with kinder messages),
// then queues cpu::<op> or vffn_cuda_<op> on the tensors' device.
#include <memory>
#include <string>
#include <vector>

#include "../core/lm_args.h"
#include "../cpu/lm.h"
#include "common.h"

namespace vffn::napi {

namespace {

using std::to_string;

std::string shape_str(const View& v) {
  std::string s = "[";
  for (int i = 0; i < v.ndim; i++) s += (i ? ", " : "") + to_string(v.shape[i]);
  return s + "]";
}
void need(const TensorArg& t, const char* name, int ndim, int32_t dtype) {
  if (t.meta.ndim != ndim)
    fail("ERR_SHAPE", std::string(name) + ": expected " + to_string(ndim) + " dimensions, got " + shape_str(t.meta));
  if (t.meta.dtype != dtype)
    fail("ERR_DTYPE", std::string(name) + ": expected " + dtype_name(dtype) + ", got " + dtype_name(t.meta.dtype));
  if (t.meta.shape[ndim - 1] > 1 && t.meta.stride[ndim - 1] != 1)
    fail("ERR_ARGUMENT", std::string(name) + ": the last dimension must be contiguous");
}
void need_contiguous(const TensorArg& t, const char* name) {
  if (!t.meta.contiguous()) fail("ERR_ARGUMENT", std::string(name) + ": expected a contiguous tensor");
}
void same_shape(const TensorArg& t, const char* name, const TensorArg& ref, const char* refname) {
  bool ok = t.meta.ndim == ref.meta.ndim;
  for (int i = 0; ok && i < t.meta.ndim; i++) ok = t.meta.shape[i] == ref.meta.shape[i];
  if (!ok)
    fail("ERR_SHAPE", std::string(name) + ": expected the shape of " + refname + " " + shape_str(ref.meta) + ", got " +
                          shape_str(t.meta));
}
void same_device(const TensorArg& ref, std::initializer_list<const TensorArg*> ts) {
  for (auto* t : ts)
    if (t->device != ref.device) fail("ERR_DEVICE", "all tensors of an op must be on one device");
}
Napi::Value undef(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

// embeddingForward(out [T, D], weight [V, D], tokens [T] int32)
Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg out = tensor_arg(info[0], "out"), w = tensor_arg(info[1], "weight"), tok = tensor_arg(info[2], "tokens");
    need(out, "out", 2, F32), need(w, "weight", 2, w.meta.dtype == BF16 ? BF16 : F32), need(tok, "tokens", 1, I32);
    need_contiguous(tok, "tokens");
    same_device(out, {&w, &tok});
    if (out.meta.shape[0] != tok.meta.shape[0] || out.meta.shape[1] != w.meta.shape[1])
      fail("ERR_SHAPE", "out: expected [" + to_string(tok.meta.shape[0]) + ", " + to_string(w.meta.shape[1]) + "], got " + shape_str(out.meta));
    Device* dev = out.device;
    enqueue(dev, "embedding_forward", Io().out(out).in(w).in(tok), [out, w, tok, dev] {
      EmbeddingForwardArgs a{out.view(), w.view(), tok.view()};
      dev->type == kCPU ? cpu::embedding_forward(a) : cuda_call(dev, "embedding_forward", &a);
    });
    return undef(info);
  });
}

// embeddingBackward(dweight [V, D] (accumulated), dout [T, D], tokens [T])
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg dw = tensor_arg(info[0], "dweight"), g = tensor_arg(info[1], "dout"), tok = tensor_arg(info[2], "tokens");
    need(dw, "dweight", 2, F32), need(g, "dout", 2, F32), need(tok, "tokens", 1, I32), need_contiguous(tok, "tokens");
    same_device(dw, {&g, &tok});
    if (g.meta.shape[0] != tok.meta.shape[0] || g.meta.shape[1] != dw.meta.shape[1])
      fail("ERR_SHAPE", "dout: expected [" + to_string(tok.meta.shape[0]) + ", " + to_string(dw.meta.shape[1]) + "], got " + shape_str(g.meta));
    Device* dev = dw.device;
    enqueue(dev, "embedding_backward", Io().inout(dw).in(g).in(tok), [dw, g, tok, dev] {
      EmbeddingBackwardArgs a{dw.view(), g.view(), tok.view()};
      dev->type == kCPU ? cpu::embedding_backward(a) : cuda_call(dev, "embedding_backward", &a);
    });
    return undef(info);
  });
}

// ropeForward / ropeBackward(x [B, S, H*hd] in place, heads, posOffset, theta, starts int32 [B] | null)
Napi::Value Rope(const Napi::CallbackInfo& info, bool backward) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg x = tensor_arg(info[0], "x");
    need(x, "x", 3, F32);
    int64_t H = int_arg(info[1], "heads"), off = int_arg(info[2], "posOffset");
    float theta = float(num_arg(info[3], "theta"));
    if (H < 1 || x.meta.shape[2] % (2 * H) != 0)
      fail("ERR_SHAPE", "x: the last dimension " + to_string(x.meta.shape[2]) + " must split into " + to_string(H) + " heads of even size");
    if (off < 0) fail("ERR_ARGUMENT", "posOffset: expected >= 0");
    bool rows = info.Length() > 4 && !info[4].IsNull() && !info[4].IsUndefined();
    TensorArg starts = rows ? tensor_arg(info[4], "starts") : TensorArg{};
    if (rows) {
      need(starts, "starts", 1, I32), need_contiguous(starts, "starts"), same_device(x, {&starts});
      if (starts.meta.shape[0] != x.meta.shape[0]) fail("ERR_SHAPE", "starts: expected one start per row of x");
    }
    Device* dev = x.device;
    const char* op = backward ? "rope_backward" : "rope_forward";
    enqueue(dev, op, Io().inout(x).in(starts), [x, H, off, theta, dev, backward, op, rows, starts] {
      RopeArgs a{x.view(), H, off, theta, rows ? starts.view() : View{}};
      if (dev->type != kCPU) return cuda_call(dev, op, &a);
      backward ? cpu::rope_backward(a) : cpu::rope_forward(a);
    });
    return undef(info);
  });
}
Napi::Value RopeForward(const Napi::CallbackInfo& info) { return Rope(info, false); }
Napi::Value RopeBackward(const Napi::CallbackInfo& info) { return Rope(info, true); }

void check_qkv(const TensorArg& q, const TensorArg& k, const TensorArg& v, int64_t H, int64_t qoff) {
  need(q, "q", 3, F32), need(k, "k", 3, F32), need(v, "v", 3, F32);
  same_shape(v, "v", k, "k");
  same_device(q, {&k, &v});
  if (k.meta.shape[0] != q.meta.shape[0] || k.meta.shape[2] != q.meta.shape[2])
    fail("ERR_SHAPE", "k: expected [" + to_string(q.meta.shape[0]) + ", Sk, " + to_string(q.meta.shape[2]) + "], got " + shape_str(k.meta));
  if (H < 1 || q.meta.shape[2] % H != 0)
    fail("ERR_SHAPE", "q: the last dimension " + to_string(q.meta.shape[2]) + " does not split into " + to_string(H) + " heads");
  if (qoff < 0 || qoff + q.meta.shape[1] > k.meta.shape[1])
    fail("ERR_SHAPE", "k: " + to_string(k.meta.shape[1]) + " keys cannot hold queries at positions " + to_string(qoff) + ".." +
                          to_string(qoff + q.meta.shape[1] - 1));
}
void check_lse(const TensorArg& lse, const TensorArg& q, int64_t H) {
  need(lse, "lse", 3, F32);
  if (lse.meta.shape[0] != q.meta.shape[0] || lse.meta.shape[1] != H || lse.meta.shape[2] != q.meta.shape[1])
    fail("ERR_SHAPE", "lse: expected [B, H, Sq], got " + shape_str(lse.meta));
}

// attentionForward(out, lse, q, k, v, heads, qOffset, scale)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg out = tensor_arg(info[0], "out"), lse = tensor_arg(info[1], "lse");
    TensorArg q = tensor_arg(info[2], "q"), k = tensor_arg(info[3], "k"), v = tensor_arg(info[4], "v");
    int64_t H = int_arg(info[5], "heads"), qoff = int_arg(info[6], "qOffset");
    float scale = float(num_arg(info[7], "scale"));
    check_qkv(q, k, v, H, qoff);
    need(out, "out", 3, F32), same_shape(out, "out", q, "q"), check_lse(lse, q, H);
    same_device(q, {&out, &lse});
    Device* dev = q.device;
    enqueue(dev, "attention_forward", Io().out(out).out(lse).in(q).in(k).in(v), [=] {
      AttentionForwardArgs a{out.view(), lse.view(), q.view(), k.view(), v.view(), H, qoff, scale};
      dev->type == kCPU ? cpu::attention_forward(a) : cuda_call(dev, "attention_forward", &a);
    });
    return undef(info);
  });
}

// attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, heads, qOffset, scale)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg dq = tensor_arg(info[0], "dq"), dk = tensor_arg(info[1], "dk"), dv = tensor_arg(info[2], "dv");
    TensorArg g = tensor_arg(info[3], "dout"), q = tensor_arg(info[4], "q"), k = tensor_arg(info[5], "k");
    TensorArg v = tensor_arg(info[6], "v"), out = tensor_arg(info[7], "out"), lse = tensor_arg(info[8], "lse");
    int64_t H = int_arg(info[9], "heads"), qoff = int_arg(info[10], "qOffset");
    float scale = float(num_arg(info[11], "scale"));
    check_qkv(q, k, v, H, qoff);
    need(dq, "dq", 3, F32), need(dk, "dk", 3, F32), need(dv, "dv", 3, F32), need(g, "dout", 3, F32), need(out, "out", 3, F32);
    same_shape(dq, "dq", q, "q"), same_shape(g, "dout", q, "q"), same_shape(out, "out", q, "q");
    same_shape(dk, "dk", k, "k"), same_shape(dv, "dv", k, "k"), check_lse(lse, q, H);
    same_device(q, {&dq, &dk, &dv, &g, &out, &lse});
    Device* dev = q.device;
    enqueue(dev, "attention_backward", Io().out(dq).out(dk).out(dv).in(g).in(q).in(k).in(v).in(out).in(lse), [=] {
      AttentionBackwardArgs a{dq.view(), dk.view(), dv.view(), g.view(), q.view(), k.view(), v.view(), out.view(), lse.view(), H, qoff, scale};
      dev->type == kCPU ? cpu::attention_backward(a) : cuda_call(dev, "attention_backward", &a);
    });
    return undef(info);
  });
}

void check_ce(const TensorArg& logits, const TensorArg& lse, const TensorArg& tg) {
  need(logits, "logits", 2, F32), need(lse, "lse", 1, F32), need(tg, "targets", 1, I32);
  need_contiguous(lse, "lse"), need_contiguous(tg, "targets");
  same_device(logits, {&lse, &tg});
  if (tg.meta.shape[0] != logits.meta.shape[0] || lse.meta.shape[0] != logits.meta.shape[0])
    fail("ERR_SHAPE", "targets: expected " + to_string(logits.meta.shape[0]) + " targets and lse values");
}

// crossEntropyForward(loss [1], lse [T], logits [T, V], targets [T], ignoreIndex)
Napi::Value CrossEntropyForward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg loss = tensor_arg(info[0], "loss"), lse = tensor_arg(info[1], "lse");
    TensorArg x = tensor_arg(info[2], "logits"), tg = tensor_arg(info[3], "targets");
    int64_t ignore = int_arg(info[4], "ignoreIndex");
    check_ce(x, lse, tg);
    need(loss, "loss", 1, F32);
    if (loss.meta.shape[0] != 1) fail("ERR_SHAPE", "loss: expected [1]");
    same_device(x, {&loss});
    Device* dev = x.device;
    enqueue(dev, "cross_entropy_forward", Io().out(loss).out(lse).in(x).in(tg), [=] {
      CrossEntropyForwardArgs a{loss.view(), lse.view(), x.view(), tg.view(), ignore};
      dev->type == kCPU ? cpu::cross_entropy_forward(a) : cuda_call(dev, "cross_entropy_forward", &a);
    });
    return undef(info);
  });
}

// crossEntropyBackward(dlogits [T, V], logits, lse, targets, dloss, ignoreIndex)
Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg d = tensor_arg(info[0], "dlogits"), x = tensor_arg(info[1], "logits");
    TensorArg lse = tensor_arg(info[2], "lse"), tg = tensor_arg(info[3], "targets");
    float dloss = float(num_arg(info[4], "dloss"));
    int64_t ignore = int_arg(info[5], "ignoreIndex");
    check_ce(x, lse, tg);
    need(d, "dlogits", 2, F32), same_shape(d, "dlogits", x, "logits");
    same_device(x, {&d});
    Device* dev = x.device;
    enqueue(dev, "cross_entropy_backward", Io().out(d).in(x).in(lse).in(tg).same_view_ok(), [=] {
      CrossEntropyBackwardArgs a{d.view(), x.view(), lse.view(), tg.view(), dloss, ignore};
      dev->type == kCPU ? cpu::cross_entropy_backward(a) : cuda_call(dev, "cross_entropy_backward", &a);
    });
    return undef(info);
  });
}

// gradNorm(out [2], grads: Tensor[], maxNorm)
Napi::Value GradNorm(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg out = tensor_arg(info[0], "out");
    need(out, "out", 1, F32);
    if (out.meta.shape[0] != 2) fail("ERR_SHAPE", "out: expected [2]");
    if (!info[1].IsArray()) fail("ERR_ARGUMENT", "grads: expected an array of tensors");
    Napi::Array arr = info[1].As<Napi::Array>();
    auto grads = std::make_shared<std::vector<TensorArg>>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      std::string name = "grads[" + to_string(i) + "]";
      grads->push_back(tensor_arg(arr.Get(i), name.c_str()));
      grads->back().name = "grads";  // the element's name above is a temporary
      const TensorArg& g = grads->back();
      if (g.meta.dtype != F32) fail("ERR_DTYPE", name + ": expected float32");
      need_contiguous(g, name.c_str());
      same_device(out, {&g});
    }
    float max_norm = float(num_arg(info[2], "maxNorm"));
    Device* dev = out.device;
    Io io;
    io.out(out);
    for (auto& g : *grads) io.in(g);
    enqueue(dev, "grad_norm", io, [out, grads, max_norm, dev] {
      std::vector<View> views;
      for (auto& g : *grads) views.push_back(g.view());
      GradNormArgs a{out.view(), views.data(), int64_t(views.size()), max_norm};
      dev->type == kCPU ? cpu::grad_norm(a) : cuda_call(dev, "grad_norm", &a);
    });
    return undef(info);
  });
}

// adamwStep(param, m, v, grad, clip [2] | null, lr, beta1, beta2, eps, weightDecay, step, copy (bf16) | null)
Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg p = tensor_arg(info[0], "param"), m = tensor_arg(info[1], "m"), v = tensor_arg(info[2], "v");
    TensorArg g = tensor_arg(info[3], "grad");
    bool has_clip = !info[4].IsNull() && !info[4].IsUndefined();
    TensorArg clip = has_clip ? tensor_arg(info[4], "clip") : TensorArg{};
    const char* names[] = {"param", "m", "v", "grad"};
    const TensorArg* ts[] = {&p, &m, &v, &g};
    for (int i = 0; i < 4; i++) {
      if (ts[i]->meta.dtype != F32) fail("ERR_DTYPE", std::string(names[i]) + ": expected float32");
      need_contiguous(*ts[i], names[i]);
      if (ts[i]->numel() != p.numel()) fail("ERR_SHAPE", std::string(names[i]) + ": expected " + to_string(p.numel()) + " elements");
    }
    same_device(p, {&m, &v, &g});
    if (has_clip) {
      need(clip, "clip", 1, F32);
      if (clip.meta.shape[0] != 2) fail("ERR_SHAPE", "clip: expected [2]");
      same_device(p, {&clip});
    }
    float lr = float(num_arg(info[5], "lr")), b1 = float(num_arg(info[6], "beta1")), b2 = float(num_arg(info[7], "beta2"));
    float eps = float(num_arg(info[8], "eps")), wd = float(num_arg(info[9], "weightDecay"));
    int64_t step = int_arg(info[10], "step");
    if (step < 1) fail("ERR_ARGUMENT", "step: expected >= 1");
    bool has_copy = info.Length() > 11 && !info[11].IsNull() && !info[11].IsUndefined();
    TensorArg copy = has_copy ? tensor_arg(info[11], "copy") : TensorArg{};
    if (has_copy) {
      if (copy.meta.dtype != BF16) fail("ERR_DTYPE", "copy: expected bfloat16");
      need_contiguous(copy, "copy");
      if (copy.numel() != p.numel()) fail("ERR_SHAPE", "copy: expected " + to_string(p.numel()) + " elements");
      same_device(p, {&copy});
    }
    Device* dev = p.device;
    // gated: a failed gradient or clip leaves the parameter, its moments and its copy untouched and valid
    Io io;
    io.inout(p).inout(m).inout(v).in(g).gate();
    if (has_copy) io.inout(copy);
    if (has_clip) io.in(clip);
    enqueue(dev, "adamw_step", io, [=] {
      AdamWArgs a{p.view(), m.view(), v.view(), g.view(), has_clip ? clip.view() : View{}, lr, b1, b2, eps, wd, step,
                  has_copy ? copy.view() : View{}};
      dev->type == kCPU ? cpu::adamw_step(a) : cuda_call(dev, "adamw_step", &a);
    });
    return undef(info);
  });
}

// axpy(y, x, alpha): y += alpha * x
Napi::Value Axpy(const Napi::CallbackInfo& info) {
  return guard(info, [&]() -> Napi::Value {
    TensorArg y = tensor_arg(info[0], "y"), x = tensor_arg(info[1], "x");
    float alpha = float(num_arg(info[2], "alpha"));
    if (y.meta.dtype != F32 || x.meta.dtype != F32) fail("ERR_DTYPE", "y: expected float32 tensors");
    need_contiguous(y, "y"), need_contiguous(x, "x"), same_device(y, {&x});
    if (y.numel() != x.numel()) fail("ERR_SHAPE", "x: expected " + to_string(y.numel()) + " elements, got " + to_string(x.numel()));
    Device* dev = y.device;
    enqueue(dev, "axpy", Io().inout(y).in(x).same_view_ok(), [=] {
      AxpyArgs a{y.view(), x.view(), alpha};
      dev->type == kCPU ? cpu::axpy(a) : cuda_call(dev, "axpy", &a);
    });
    return undef(info);
  });
}

void Register(Napi::Env env, Napi::Object exports) {
  exports.Set("embeddingForward", Napi::Function::New(env, EmbeddingForward));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("ropeForward", Napi::Function::New(env, RopeForward));
  exports.Set("ropeBackward", Napi::Function::New(env, RopeBackward));
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward));
  exports.Set("crossEntropyForward", Napi::Function::New(env, CrossEntropyForward));
  exports.Set("crossEntropyBackward", Napi::Function::New(env, CrossEntropyBackward));
  exports.Set("gradNorm", Napi::Function::New(env, GradNorm));
  exports.Set("adamwStep", Napi::Function::New(env, AdamWStep));
  exports.Set("axpy", Napi::Function::New(env, Axpy));
}
VFFN_REGISTER(Register);

}  // namespace
}  // namespace vffn::napi
