// Validated wrappers of the language-model ops (embedding, rotary, attention, cross-entropy,
// gradient norm, AdamW). Each checks shapes, dtypes and devices with precise messages, allocates
// what it returns and queues the native op. Modules in nn/ and optim/ compose these.
import { native } from './binding'
import { fail, show } from './errors'
import { checkSameDevice, checkTensor, tensorArg } from './ops'
import { Tensor, empty } from './tensor'
import { INT32, arg, bool, checkOptions, int, number, object, optional } from './validate'


const F32 = ['float32'] as const

/** out[t] = weight[tokens[t]]: tokens int32 [T], weight [V, D] (float32 or bfloat16) -> float32 [T, D]. An id outside [0, V) fails the op: the output (and what is computed from it) rejects its waits with ERR_ARGUMENT. */
export function embedding(weight: Tensor, tokens: Tensor, out?: Tensor): Tensor {
  checkTensor('weight', weight, { ndim: 2, dtypes: ['float32', 'bfloat16'] })
  checkTensor('tokens', tokens, { ndim: 1, dtypes: ['int32'] })
  if (out !== undefined) {
    checkTensor('out', out, { ndim: 2, dtypes: F32 })
    if (out.shape[0] !== tokens.shape[0] || out.shape[1] !== weight.shape[1])
      fail('ERR_SHAPE', `out: expected shape [${tokens.shape[0]}, ${weight.shape[1]}], got ${show(out.shape)}`)
  }
  checkSameDevice(weight, { tokens, out })
  const o = out ?? empty([tokens.shape[0], weight.shape[1]], { device: weight.device })
  const t = tokens.contiguous()
  try {
    native.embeddingForward(o._id, weight._id, t._id)
  } finally {
    t.dispose()
  }
  return o
}

/** dweight[tokens[t]] += dout[t], in token order (deterministic). */
export function embeddingBackward(dweight: Tensor, dout: Tensor, tokens: Tensor): void {
  checkTensor('dweight', dweight, { ndim: 2, dtypes: F32 })
  checkTensor('dout', dout, { ndim: 2, dtypes: F32 })
  checkTensor('tokens', tokens, { ndim: 1, dtypes: ['int32'] })
  checkSameDevice(dweight, { dout, tokens })
  const t = tokens.contiguous()
  try {
    native.embeddingBackward(dweight._id, dout._id, t._id)
  } finally {
    t.dispose()
  }
}

const ROPE_OPTIONS = { theta: optional(number({ exclusiveMin: 0 })), inverse: optional(bool) }

/** Rotary embedding in place on x [B, S, H*hd] (non-interleaved, positions posOffset + s); theta > 0 (default 10000); inverse = backward. */
export function rope(x: Tensor, heads: number, posOffset = 0, opts: { theta?: number; inverse?: boolean } = {}): void {
  checkTensor('x', x, { ndim: 3, dtypes: F32 })
  arg('heads', heads, int(1))
  arg('posOffset', posOffset, int(0))
  const o = checkOptions('opts', opts, ROPE_OPTIONS)
  const theta = o.theta ?? 10000
  if (x.shape[2] % (2 * heads) !== 0)
    fail('ERR_SHAPE', `x: the last dimension ${x.shape[2]} must split into ${heads} heads of even size`)
  if (o.inverse) native.ropeBackward(x._id, heads, posOffset, theta)
  else native.ropeForward(x._id, heads, posOffset, theta)
}

/** The output of attention and what its backward needs. */
export interface AttentionResult {
  out: Tensor
  /** [B, H, Sq] log-sum-exp of each query's scores (saved for backward) */
  lse: Tensor
}

function checkQKV(q: Tensor, k: Tensor, v: Tensor, heads: number, qOffset: number): void {
  checkTensor('q', q, { ndim: 3, dtypes: F32 })
  checkTensor('k', k, { ndim: 3, dtypes: F32 })
  checkTensor('v', v, { ndim: 3, dtypes: F32 })
  checkSameDevice(q, { k, v })
  arg('heads', heads, int(1))
  arg('qOffset', qOffset, int(0))
  const [B, Sq, C] = q.shape
  if (k.shape[0] !== B || k.shape[2] !== C) fail('ERR_SHAPE', `k: expected [${B}, Sk, ${C}], got ${show(k.shape)}`)
  if (v.shape.join() !== k.shape.join()) fail('ERR_SHAPE', `v: expected the shape of k ${show(k.shape)}, got ${show(v.shape)}`)
  if (C % heads !== 0) fail('ERR_SHAPE', `q: ${C} columns do not split into ${heads} heads`)
  if (qOffset + Sq > k.shape[1]) fail('ERR_SHAPE', `k: ${k.shape[1]} keys cannot serve queries at positions ${qOffset}..${qOffset + Sq - 1}`)
}

/**
 * Causal multi-head attention: q [B, Sq, H*hd], k, v [B, Sk, H*hd] (views with strided rows are
 * fine); query s sits at position qOffset + s. Scale 1/sqrt(hd) unless given.
 */
const ATTENTION_OPTIONS = { qOffset: optional(int(0)), scale: optional(number()), out: optional(tensorArg({ ndim: 3, dtypes: F32 })) }

/**
 * Causal multi-head softmax attention: q [B, Sq, H*hd], k and v [B, Sk, H*hd] (row views allowed),
 * query s at position qOffset + s sees keys 0..qOffset + s (qOffset = Sk - Sq when decoding with a
 * cache). Returns out [B, Sq, H*hd] (or writes `out`) and the log-sum-exp [B, H, Sq]; no Sq × Sk
 * matrix is stored. scale defaults to 1/sqrt(hd).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, heads: number, opts: { qOffset?: number; scale?: number; out?: Tensor } = {}): AttentionResult {
  const o = checkOptions('opts', opts, ATTENTION_OPTIONS)
  const qOffset = o.qOffset ?? 0
  checkQKV(q, k, v, heads, qOffset)
  const [B, Sq, C] = q.shape
  const scale = o.scale ?? 1 / Math.sqrt(C / heads)
  if (o.out && o.out.shape.join() !== q.shape.join()) fail('ERR_SHAPE', `out: expected ${show(q.shape)}, got ${show(o.out.shape)}`)
  if (o.out) checkSameDevice(q, { out: o.out })
  const out = o.out ?? empty([B, Sq, C], { device: q.device })
  const lse = empty([B, heads, Sq], { device: q.device })
  native.attentionForward(out._id, lse._id, q._id, k._id, v._id, heads, qOffset, scale)
  return { out, lse }
}

/** Gradients of attention; dq, dk, dv (shaped like q, k, v; views allowed) are overwritten. */
export function attentionBackward(
  grads: { dq: Tensor; dk: Tensor; dv: Tensor },
  dout: Tensor,
  saved: { q: Tensor; k: Tensor; v: Tensor; out: Tensor; lse: Tensor },
  heads: number,
  opts: { qOffset?: number; scale?: number } = {},
): void {
  const T3 = tensorArg({ ndim: 3, dtypes: F32 })
  arg('grads', grads, object({ dq: T3, dk: T3, dv: T3 }, ['dq', 'dk', 'dv']))
  const { q, k, v, out, lse } = arg('saved', saved, object({ q: T3, k: T3, v: T3, out: T3, lse: T3 }, ['q', 'k', 'v', 'out', 'lse'])) as typeof saved
  const o = checkOptions('opts', opts, { qOffset: optional(int(0)), scale: optional(number()) })
  const qOffset = o.qOffset ?? 0
  checkQKV(q, k, v, heads, qOffset)
  const scale = o.scale ?? 1 / Math.sqrt(q.shape[2] / heads)
  for (const [n, t, ref] of [['dq', grads.dq, q], ['dk', grads.dk, k], ['dv', grads.dv, v], ['dout', dout, q], ['out', out, q]] as const) {
    checkTensor(n, t, { ndim: 3, dtypes: F32 })
    if (t.shape.join() !== ref.shape.join()) fail('ERR_SHAPE', `${n}: expected ${show(ref.shape)}, got ${show(t.shape)}`)
  }
  checkTensor('lse', lse, { ndim: 3, dtypes: F32 })
  native.attentionBackward(grads.dq._id, grads.dk._id, grads.dv._id, dout._id, q._id, k._id, v._id, out._id, lse._id, heads, qOffset, scale)
}

/** The mean loss [1] and each row's log-sum-exp [T] (saved for backward). */
export interface CrossEntropyResult {
  /** [1] mean loss over counted tokens */
  loss: Tensor
  /** [T] per-row log-sum-exp (saved for backward) */
  lse: Tensor
}

function checkCE(logits: Tensor, targets: Tensor, ignoreIndex: number): void {
  checkTensor('logits', logits, { ndim: 2, dtypes: F32 })
  checkTensor('targets', targets, { ndim: 1, dtypes: ['int32'] })
  checkSameDevice(logits, { targets })
  arg('ignoreIndex', ignoreIndex, INT32)
  if (targets.shape[0] !== logits.shape[0])
    fail('ERR_SHAPE', `targets: expected ${logits.shape[0]} targets (one per logits row), got ${targets.shape[0]}`)
}

/** Mean softmax cross-entropy of logits [T, V] against targets int32 [T]; targets equal to ignoreIndex (default -100) are skipped. */
export function crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex = -100): CrossEntropyResult {
  checkCE(logits, targets, ignoreIndex)
  const loss = empty([1], { device: logits.device })
  const lse = empty([logits.shape[0]], { device: logits.device })
  const t = targets.contiguous()
  try {
    native.crossEntropyForward(loss._id, lse._id, logits._id, t._id, ignoreIndex)
  } finally {
    t.dispose()
  }
  return { loss, lse }
}

/** dlogits = dloss/count (softmax - onehot); `out` may be the logits tensor itself (in place). */
export function crossEntropyBackward(logits: Tensor, targets: Tensor, lse: Tensor, dloss = 1, ignoreIndex = -100, out?: Tensor): Tensor {
  checkCE(logits, targets, ignoreIndex)
  checkTensor('lse', lse, { ndim: 1, dtypes: F32 })
  if (lse.shape[0] !== logits.shape[0]) fail('ERR_SHAPE', `lse: expected ${logits.shape[0]} entries, got ${lse.shape[0]}`)
  arg('dloss', dloss, number())
  if (out !== undefined) {
    checkTensor('out', out, { ndim: 2, dtypes: F32 })
    if (out.shape.join() !== logits.shape.join()) fail('ERR_SHAPE', `out: expected ${show(logits.shape)}, got ${show(out.shape)}`)
  }
  checkSameDevice(logits, { lse, out })
  const d = out ?? empty(logits.shape, { device: logits.device })
  const t = targets.contiguous()
  try {
    native.crossEntropyBackward(d._id, logits._id, lse._id, t._id, dloss, ignoreIndex)
  } finally {
    t.dispose()
  }
  return d
}

/** [2] = (global L2 norm of grads, clip coefficient min(1, maxNorm/(norm + 1e-6))); maxNorm <= 0: no clipping. */
export function gradNorm(grads: readonly Tensor[], maxNorm = 0): Tensor {
  if (!Array.isArray(grads) || grads.length === 0) fail('ERR_ARGUMENT', `grads: expected a non-empty array of tensors, got ${show(grads)}`)
  grads.forEach((g, i) => checkTensor(`grads[${i}]`, g, { dtypes: F32 }))
  checkSameDevice(grads[0], Object.fromEntries(grads.map((g, i) => [`grads[${i}]`, g])))
  arg('maxNorm', maxNorm, number())
  for (const [i, g] of grads.entries()) if (!g.isContiguous) fail('ERR_ARGUMENT', `grads[${i}]: expected a contiguous tensor`)
  const out = empty([2], { device: grads[0].device })
  native.gradNorm(out._id, grads.map((g) => g._id), maxNorm)
  return out
}

/** The hyperparameters of one AdamW update (see adamwStep); step is 1-based and drives the bias correction. */
export interface AdamWHyper {
  lr: number
  beta1: number
  beta2: number
  eps: number
  weightDecay: number
  /** 1-based step for bias correction */
  step: number
}

const unit = number({ min: 0, exclusiveMax: 1 })
const ADAMW_HYPER = object(
  { lr: number({ min: 0 }), beta1: unit, beta2: unit, eps: number({ exclusiveMin: 0 }), weightDecay: number({ min: 0 }), step: int(1) },
  ['lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'step'],
)

/**
 * One AdamW update in place (param, m, v float32, contiguous); grad scaled by clip[1] when clip is
 * given, and nothing changes when clip[0] (the global norm) is NaN or infinite (a skipped step).
 * `copy` (bfloat16, contiguous, the param's size), when given, receives the updated parameter
 * rounded to nearest even in the same pass (bf16-mixed training's compute copy); a skipped or
 * failed update leaves it as it was, like the parameter.
 */
export function adamwStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWHyper, clip?: Tensor, copy?: Tensor): void {
  for (const [n, t] of [['param', param], ['grad', grad], ['m', m], ['v', v]] as const) {
    checkTensor(n, t, { dtypes: F32 })
    if (!t.isContiguous) fail('ERR_ARGUMENT', `${n}: expected a contiguous tensor`)
    if (t.size !== param.size) fail('ERR_SHAPE', `${n}: expected ${param.size} elements, got ${t.size}`)
  }
  if (clip !== undefined) checkTensor('clip', clip, { ndim: 1, dtypes: F32 })
  if (copy !== undefined) {
    checkTensor('copy', copy, { dtypes: ['bfloat16'] })
    if (!copy.isContiguous) fail('ERR_ARGUMENT', 'copy: expected a contiguous tensor')
    if (copy.size !== param.size) fail('ERR_SHAPE', `copy: expected ${param.size} elements, got ${copy.size}`)
  }
  checkSameDevice(param, { grad, m, v, clip, copy })
  arg('h', h, ADAMW_HYPER)
  native.adamwStep(param._id, m._id, v._id, grad._id, clip ? clip._id : null, h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, h.step, copy ? copy._id : null)
}

/** y += alpha * x in place (both float32, contiguous, same element count). */
export function axpy(y: Tensor, x: Tensor, alpha = 1): void {
  checkTensor('y', y, { dtypes: F32 })
  checkTensor('x', x, { dtypes: F32 })
  checkSameDevice(y, { x })
  arg('alpha', alpha, number())
  if (!y.isContiguous || !x.isContiguous) fail('ERR_ARGUMENT', 'axpy: y and x must be contiguous')
  if (y.size !== x.size) fail('ERR_SHAPE', `x: expected ${y.size} elements, got ${x.size}`)
  native.axpy(y._id, x._id, alpha)
}

/** Sets a tensor to zero in place. */
export function zero_(x: Tensor): void {
  checkTensor('x', x).fill_(0)
}
