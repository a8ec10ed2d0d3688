// Causal multi-head self-attention as docs/SPEC.md fixes it: fused att_proj [3D, D] -> q | k | v,
// rotary on q and k (non-interleaved, theta 10000, position = index in the sequence), causal
// softmax(q k^T / sqrt(D/H)) v, then attn_out [D, D]. No biases. Optional KV cache for decoding.
import { fail, show } from '../errors'
import { attention, attentionBackward, rope } from '../lm_ops'
import { checkSameDevice, checkTensor, matmul, reshapeFree } from '../ops'
import { Tensor, empty } from '../tensor'
import { Check, arg, custom, int, object } from '../validate'

/** What an attention forward in training keeps for backward. */
export interface AttentionSaved {
  B: number
  S: number
  /** normalized input [T, D] */
  xn: Tensor
  /** [B, S, 3D] with rotary applied to q and k */
  qkv: Tensor
  /** [B, S, D] attention output before attn_out */
  att: Tensor
  lse: Tensor
}

export const ROPE_THETA = 10000

/** @internal a tensor of exactly `shape` (float32 unless `dtypes` says otherwise) */
export function shaped(shape: readonly number[], dtypes: readonly string[] = ['float32']): Check<Tensor> {
  return custom(`a ${dtypes.join(' or ')} Tensor of shape [${shape.join(', ')}]`, (name, v) => {
    const t = checkTensor(name, v, { ndim: shape.length, dtypes })
    if (t.shape.some((d, i) => d !== shape[i])) fail('ERR_SHAPE', `${name}: expected shape [${shape.join(', ')}], got ${show(t.shape)}`)
    return t
  })
}

/** @internal dModel must split into nHeads heads of even size (rotary pairs dimensions) */
export function checkHeads(dModel: number, nHeads: number): void {
  arg('dModel', dModel, int(1))
  arg('nHeads', nHeads, int(1))
  if (dModel % nHeads !== 0 || (dModel / nHeads) % 2 !== 0)
    fail('ERR_ARGUMENT', `nHeads: dModel ${dModel} must split into ${nHeads} heads of even size, got head size ${dModel / nHeads}`)
}

const ATT_SAVED = object({ B: int(1), S: int(1), xn: custom('a Tensor', checkTensor), qkv: custom('a Tensor', checkTensor), att: custom('a Tensor', checkTensor), lse: custom('a Tensor', checkTensor) }, ['B', 'S', 'xn', 'qkv', 'att', 'lse'], true)

/** Multi-head causal self-attention with rotary positions: `att_proj.weight` [3D, D] (q, k, v) and `attn_out.weight` [D, D]. */
export class CausalSelfAttention {
  readonly dModel: number
  readonly nHeads: number
  readonly params: Record<'att_proj.weight' | 'attn_out.weight', Tensor>
  private readonly gradsOf: () => Record<'att_proj.weight' | 'attn_out.weight', Tensor>

  /**
   * `grads` are the gradients backward accumulates into, or a function that supplies them when
   * backward first needs them (a model allocates its gradients lazily, as TransformerBlock's normGrad).
   */
  constructor(dModel: number, nHeads: number, params: Record<'att_proj.weight' | 'attn_out.weight', Tensor>,
              grads: Record<'att_proj.weight' | 'attn_out.weight', Tensor> | (() => Record<'att_proj.weight' | 'attn_out.weight', Tensor>)) {
    checkHeads(dModel, nHeads)
    const D = dModel
    arg('params', params, object({ 'att_proj.weight': shaped([3 * D, D], ['float32', 'bfloat16']), 'attn_out.weight': shaped([D, D], ['float32', 'bfloat16']) }, ['att_proj.weight', 'attn_out.weight']))
    // an inference-only (bfloat16) model passes empty [0] stand-ins for the gradients
    const grad = (shape: number[]) => custom<Tensor>(`a float32 Tensor of shape [${shape.join(', ')}] or [0]`, (n, v) =>
      checkTensor(n, v).size === 0 ? (v as Tensor) : shaped(shape)(n, v))
    if (typeof grads === 'function') {
      checkSameDevice(params['att_proj.weight'], { 'params.attn_out.weight': params['attn_out.weight'] })
      this.gradsOf = grads
    } else {
      arg('grads', grads, object({ 'att_proj.weight': grad([3 * D, D]), 'attn_out.weight': grad([D, D]) }, ['att_proj.weight', 'attn_out.weight']))
      checkSameDevice(params['att_proj.weight'], { 'params.attn_out.weight': params['attn_out.weight'], 'grads.att_proj.weight': grads['att_proj.weight'], 'grads.attn_out.weight': grads['attn_out.weight'] })
      this.gradsOf = () => grads
    }
    this.dModel = dModel
    this.nHeads = nHeads
    this.params = params
  }

  /** The gradients backward accumulates into (supplied on first use when the constructor got a function). */
  get grads(): Record<'att_proj.weight' | 'attn_out.weight', Tensor> {
    return this.gradsOf()
  }

  /** q|k|v of the normalized rows xn [B*S, D] with rotary applied at positions posOffset.. */
  private project(xn: Tensor, B: number, S: number, posOffset: number): Tensor {
    const D = this.dModel
    const qkv = reshapeFree(matmul(xn, this.params['att_proj.weight'], { transposeB: true }), [B, S, 3 * D])
    const qk = qkv.slice(2, 0, 2 * D)
    rope(qk, 2 * this.nHeads, posOffset, { theta: ROPE_THETA })
    qk.dispose()
    return qkv
  }

  /**
   * xn: normalized input [B*S, D]. Adds attn_out(attention) into `residual` [B*S, D] in place
   * (residual += ...). Returns what backward needs.
   */
  forward(xn: Tensor, B: number, S: number, residual: Tensor): AttentionSaved {
    const D = this.dModel
    arg('B', B, int(1))
    arg('S', S, int(1))
    arg('xn', xn, shaped([B * S, D]))
    arg('residual', residual, shaped([B * S, D]))
    checkSameDevice(this.params['att_proj.weight'], { xn, residual })
    const qkv = this.project(xn, B, S, 0)
    const q = qkv.slice(2, 0, D), k = qkv.slice(2, D, 2 * D), v = qkv.slice(2, 2 * D, 3 * D)
    const { out: att, lse } = attention(q, k, v, this.nHeads)
    const att2 = att.reshape([B * S, D])
    matmul(att2, this.params['attn_out.weight'], { transposeB: true, out: residual, alpha: 1, beta: 1 })
    att2.dispose()
    q.dispose()
    k.dispose()
    v.dispose()
    return { B, S, xn, qkv, att, lse }
  }

  /** dres: gradient at the residual sum [B*S, D]. Accumulates weight gradients; returns d(xn) [B*S, D]. */
  backward(saved: AttentionSaved, dres: Tensor): Tensor {
    const D = this.dModel
    arg('saved', saved, ATT_SAVED)
    const { B, S, xn, qkv, att, lse } = saved
    arg('dres', dres, shaped([B * S, D]))
    const att2 = att.reshape([B * S, D])
    matmul(dres, att2, { transposeA: true, out: this.grads['attn_out.weight'], beta: 1 })
    const datt = reshapeFree(matmul(dres, this.params['attn_out.weight']), [B, S, D])
    const dqkv = empty([B, S, 3 * D], { device: dres.device })
    const v3 = (t: Tensor, i: number) => t.slice(2, i * D, (i + 1) * D)
    const [q, k, v, dq, dk, dv] = [v3(qkv, 0), v3(qkv, 1), v3(qkv, 2), v3(dqkv, 0), v3(dqkv, 1), v3(dqkv, 2)]
    attentionBackward({ dq, dk, dv }, datt, { q, k, v, out: att, lse }, this.nHeads)
    const dqk = dqkv.slice(2, 0, 2 * D)
    rope(dqk, 2 * this.nHeads, 0, { theta: ROPE_THETA, inverse: true })
    dqk.dispose()
    const dqkv2 = dqkv.reshape([B * S, 3 * D])
    matmul(dqkv2, xn, { transposeA: true, out: this.grads['att_proj.weight'], beta: 1 })
    const dxn = matmul(dqkv2, this.params['att_proj.weight'])
    for (const t of [att2, datt, dqkv, q, k, v, dq, dk, dv, dqkv2]) t.dispose()
    return dxn
  }
}
