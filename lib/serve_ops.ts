// Validated wrappers of the serving ops: writes into a paged KV cache, causal attention over it
// with per-sequence lengths, rotary embedding at per-row positions, and sampling on the device
// (only the chosen ids and their log-probabilities come back). Inference only; no backward.
// A pool holds NB blocks of BS token rows, kPool/vPool [NB, BS, D]; flat slot s is row s % BS of
// block floor(s / BS). Slots, lengths and block tables are data: the kernels check them before
// writing anything, and a bad one fails the op (ERR_ARGUMENT on what it writes: for kvWrite, the
// pools, whose values stay as they were but which then carry the failure, so validate slots first).
import { native } from './binding'
import { fail, show } from './errors'
import { checkSameDevice, checkTensor } from './ops'
import { Tensor, empty } from './tensor'
import { arg, checkOptions, int, number, optional } from './validate'

const F32 = ['float32'] as const
const I32 = ['int32'] as const

function checkPools(kPool: Tensor, vPool: Tensor): [number, number, number] {
  checkTensor('kPool', kPool, { ndim: 3, dtypes: F32 })
  checkTensor('vPool', vPool, { ndim: 3, dtypes: F32 })
  if (vPool.shape.join() !== kPool.shape.join()) fail('ERR_SHAPE', `vPool: expected the shape of kPool ${show(kPool.shape)}, got ${show(vPool.shape)}`)
  if (!kPool.isContiguous || !vPool.isContiguous) fail('ERR_ARGUMENT', 'kPool: expected contiguous pools')
  checkSameDevice(kPool, { vPool })
  return kPool.shape as [number, number, number]
}

/** Writes row t of k and v (float32 [T, D]) at flat slot slots[t] (int32 [T]) of the pools, in place. */
export function kvWrite(kPool: Tensor, vPool: Tensor, k: Tensor, v: Tensor, slots: Tensor): void {
  const [, , D] = checkPools(kPool, vPool)
  checkTensor('k', k, { ndim: 2, dtypes: F32 })
  checkTensor('v', v, { ndim: 2, dtypes: F32 })
  checkTensor('slots', slots, { ndim: 1, dtypes: I32 })
  if (k.shape[1] !== D) fail('ERR_SHAPE', `k: expected rows of ${D} values (the pool's width), got ${show(k.shape)}`)
  if (v.shape.join() !== k.shape.join()) fail('ERR_SHAPE', `v: expected the shape of k ${show(k.shape)}, got ${show(v.shape)}`)
  if (slots.shape[0] !== k.shape[0]) fail('ERR_SHAPE', `slots: expected ${k.shape[0]} slots (one per row of k), got ${slots.shape[0]}`)
  checkSameDevice(kPool, { k, v, slots })
  const s = slots.contiguous()
  try {
    native.kvWrite(kPool._id, vPool._id, k._id, v._id, s._id)
  } finally {
    s.dispose()
  }
}

const ATTENTION_OPTIONS = { scale: optional(number()) }

/**
 * Causal attention of q float32 [B, Sq, H*hd] over each sequence's keys in the pools. blockTable
 * int32 [B, MB]: key j of sequence b is at flat slot blockTable[b, floor(j / BS)] * BS + j % BS;
 * lens int32 [B]: sequence b has lens[b] keys, this step's included (write them with kvWrite
 * first); its query s is at position lens[b] - Sq + s and sees keys 0..that position. Returns
 * float32 [B, Sq, H*hd]. scale defaults to 1/sqrt(hd).
 */
export function pagedAttention(q: Tensor, kPool: Tensor, vPool: Tensor, blockTable: Tensor, lens: Tensor, heads: number, opts: { scale?: number } = {}): Tensor {
  const [, , D] = checkPools(kPool, vPool)
  checkTensor('q', q, { ndim: 3, dtypes: F32 })
  checkTensor('blockTable', blockTable, { ndim: 2, dtypes: I32 })
  checkTensor('lens', lens, { ndim: 1, dtypes: I32 })
  arg('heads', heads, int(1))
  const o = checkOptions('opts', opts, ATTENTION_OPTIONS)
  const [B, Sq, C] = q.shape
  if (C !== D) fail('ERR_SHAPE', `q: expected rows of ${D} values (the pool's width), got ${show(q.shape)}`)
  if (C % heads !== 0) fail('ERR_SHAPE', `heads: ${C} columns do not split into ${heads} heads`)
  if (Sq < 1) fail('ERR_SHAPE', `q: expected at least one query per sequence, got ${show(q.shape)}`)
  if (blockTable.shape[0] !== B) fail('ERR_SHAPE', `blockTable: expected ${B} rows (one per sequence), got ${show(blockTable.shape)}`)
  if (lens.shape[0] !== B) fail('ERR_SHAPE', `lens: expected ${B} lengths (one per sequence), got ${show(lens.shape)}`)
  checkSameDevice(q, { kPool, blockTable, lens })
  const scale = o.scale ?? 1 / Math.sqrt(C / heads)
  const out = empty([B, Sq, C], { device: q.device })
  const bt = blockTable.contiguous()
  const ln = lens.contiguous()
  try {
    native.pagedAttention(out._id, q._id, kPool._id, vPool._id, bt._id, ln._id, heads, scale)
  } catch (e) {
    out.dispose()
    throw e
  } finally {
    bt.dispose()
    ln.dispose()
  }
  return out
}

const ROPE_ROWS_OPTIONS = { theta: optional(number({ exclusiveMin: 0 })) }

/** Rotary embedding in place on x float32 [B, S, H*hd], like `rope`, with row b's token s at position starts[b] + s (starts int32 [B]). theta > 0, default 10000. */
export function ropeRows(x: Tensor, heads: number, starts: Tensor, opts: { theta?: number } = {}): void {
  checkTensor('x', x, { ndim: 3, dtypes: F32 })
  arg('heads', heads, int(1))
  checkTensor('starts', starts, { ndim: 1, dtypes: I32 })
  const o = checkOptions('opts', opts, ROPE_ROWS_OPTIONS)
  if (x.shape[2] % (2 * heads) !== 0) fail('ERR_SHAPE', `x: the last dimension ${x.shape[2]} must split into ${heads} heads of even size`)
  if (starts.shape[0] !== x.shape[0]) fail('ERR_SHAPE', `starts: expected ${x.shape[0]} starts (one per row of x), got ${starts.shape[0]}`)
  checkSameDevice(x, { starts })
  const s = starts.contiguous()
  try {
    native.ropeForward(x._id, heads, 0, o.theta ?? 10000, s._id)
  } finally {
    s.dispose()
  }
}

/** What `sample` returns: the chosen ids and their log-probabilities (tensors on the logits' device). */
export interface SampleResult {
  /** int32 [B] */
  ids: Tensor
  /** float32 [B]: log softmax(logits)[id] at temperature 1, before any filtering */
  logprobs: Tensor
}

/**
 * One id per row of logits float32 [B, V], chosen on the device. params float32 [B, 4] holds each
 * row's (temperature, topK, topP, u), u a uniform number in [0, 1) drawn by the caller (so a row's
 * choice depends only on its own logits and u). temperature 0 takes the argmax (ties: the lowest
 * id). Otherwise z = logits / temperature; the kept ids are the topK largest z (topK 0: all; ties
 * to the lower id), then, when topP < 1, the shortest prefix of those in descending z whose softmax
 * mass reaches topP (at least one id); with weights w = exp(z - max z) over the kept ids and
 * r = u · Σw, the id is the first kept id in ascending id order whose running sum of w exceeds r.
 * Computed in double. A row with temperature < 0, a fractional or negative topK, topP outside
 * (0, 1] or u outside [0, 1) fails the op (ERR_ARGUMENT). On CUDA the rows are sampled on the CPU
 * for now (the logits are copied there; the same rule, so the same ids), and the results moved back.
 */
export function sample(logits: Tensor, params: Tensor): SampleResult {
  checkTensor('logits', logits, { ndim: 2, dtypes: F32 })
  checkTensor('params', params, { ndim: 2, dtypes: F32 })
  const [B, V] = logits.shape
  if (V < 1) fail('ERR_SHAPE', `logits: expected at least one id per row, got ${show(logits.shape)}`)
  if (params.shape[0] !== B || params.shape[1] !== 4) fail('ERR_SHAPE', `params: expected [${B}, 4] (temperature, topK, topP, u per row), got ${show(params.shape)}`)
  checkSameDevice(logits, { params })
  if (logits.device.type !== 'cpu') {
    const [lc, pc] = [logits.to('cpu'), params.to('cpu')]
    const r = sample(lc, pc)
    lc.dispose()
    pc.dispose()
    const out = { ids: r.ids.to(logits.device), logprobs: r.logprobs.to(logits.device) }
    r.ids.dispose()
    r.logprobs.dispose()
    return out
  }
  const ids = empty([B], { dtype: 'int32', device: logits.device })
  const logprobs = empty([B], { device: logits.device })
  try {
    native.sample(ids._id, logprobs._id, logits._id, params._id)
  } catch (e) {
    ids.dispose()
    logprobs.dispose()
    throw e
  }
  return { ids, logprobs }
}
