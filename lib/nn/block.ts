// The OLMo-style pre-norm transformer block of docs/SPEC.md: h = x + Attn(attn_norm(x)), out = FFN(h),
// where FFN is the dense F or VersatileFFN (both include their residual). Rows are tokens [B*S, D].
import { native } from '../binding'
import { fail } from '../errors'
import { axpy } from '../lm_ops'
import { Tensor, empty, zeros } from '../tensor'
import { AttentionSaved, CausalSelfAttention, shaped } from './attention'
import { DenseFFN, FFN_FORWARD_OPTIONS } from './ffn'
import { VersatileFFN } from './versatile'
import { MoEFFN } from './moe'
import { LoopFFN } from './loop'
import { checkSameDevice, checkTensor } from '../ops'
import { arg, check, checkOptions, custom, func, instance, int, number, object, oneOf, optional } from '../validate'

const EPS = 1e-6

/** n(x) = x / sqrt(mean(x²) + 1e-6) ⊙ w over rows of x [T, D]; rstd [T] kept when asked. */
export function rmsnorm(x: Tensor, w: Tensor, keep: boolean): { out: Tensor; rstd?: Tensor } {
  const out = empty(x.shape, { device: x.device })
  const rstd = keep ? empty([x.shape[0]], { device: x.device }) : undefined
  native.rmsnormForward(out._id, rstd ? rstd._id : null, x._id, w._id, EPS)
  return { out, rstd }
}

/** dx of RMSNorm (written), dw accumulated. */
export function rmsnormBackward(dout: Tensor, x: Tensor, w: Tensor, rstd: Tensor, dw: Tensor): Tensor {
  const dx = empty(x.shape, { device: x.device })
  native.rmsnormBackward(dx._id, dw._id, dout._id, x._id, w._id, rstd._id)
  return dx
}

/** What a block needs from its FFN: the module API of DenseFFN and VersatileFFN. */
export interface FFNModule {
  readonly grads: Record<string, Tensor>
  /** the parameters by name */
  stateDict(): Record<string, Tensor>
  /** copies values into the parameters */
  loadStateDict(sd: Record<string, Tensor | Float32Array>): void
  /** x [T, D] -> y (with the residual) */
  forward(x: Tensor, opts: Record<string, unknown>): { y: Tensor; auxLoss?: unknown; stats?: unknown }
  /** dy -> dx, accumulating the gradients */
  backward(saved: never, dy: Tensor): Tensor
  /** frees parameters and gradients */
  dispose(): void
}

/** Options of TransformerBlock.forward. */
export interface BlockForwardOptions {
  train?: boolean
  step?: number
  noise?: 'gumbel' | 'none'
  seed?: number | bigint
  /** the Gumbel temperature of a VersatileFFN layer; default gumbelTemperature(step) */
  tau?: number
}

/** What a block's training forward keeps for backward. */
export interface BlockSaved {
  x: Tensor
  rstd: Tensor
  attn: AttentionSaved
  ffn: unknown
}

/** What a block with recompute 'block' keeps: its input and how to run its forward again. */
export interface BlockReplay {
  x: Tensor
  /** @internal the forward's sizes and options, replayed by backward */
  replay: { B: number; S: number; step: number; noise: 'gumbel' | 'none'; seed: number | bigint; tau?: number }
}

/** Options of TransformerBlock. */
export interface BlockOptions {
  /**
   * 'none' (default): a training forward keeps every activation its backward reads; 'block':
   * only the block's input, and backward runs the forward again (same noise, so the same
   * routing, depth and gradients, bit for bit) before its own work. The recomputed activations
   * take their memory when the device runs the ops that write them, so one block's worth lives
   * at a time.
   */
  recompute?: 'none' | 'block'
}

/** @internal every tensor a block's saved record holds (its input first) */
export function blockSavedTensors(b: BlockSaved | BlockReplay): Tensor[] {
  if ('replay' in b) return [b.x]
  return [b.x, b.rstd, b.attn.xn, b.attn.qkv, b.attn.att, b.attn.lse]
}

/** @internal frees what backward would have: all but the input (the caller owns it) */
export function releaseBlockSaved(b: BlockSaved | BlockReplay): void {
  if ('replay' in b) return
  for (const t of blockSavedTensors(b).slice(1)) t.dispose()
  ;(b.ffn as { dispose(): void }).dispose()
}

// runs fn with CPU tensors taking their memory when their first op runs, not when queued
function deferred<T>(fn: () => T): T {
  const prev = native.deferAlloc(true)
  try {
    return fn()
  } finally {
    native.deferAlloc(prev)
  }
}

const FFN_ARG = check<FFNModule>('a DenseFFN, VersatileFFN, MoEFFN or LoopFFN', (v) => v instanceof DenseFFN || v instanceof VersatileFFN || v instanceof MoEFFN || v instanceof LoopFFN)
const ANY_TENSOR = custom('a Tensor', (n, v) => checkTensor(n, v))
// a block's record: what forward(train: true) returned as `saved`
const BLOCK_SAVED = object({ x: ANY_TENSOR, rstd: ANY_TENSOR, attn: object({}, [], true) }, ['x', 'rstd', 'attn'], true)
const BLOCK_REPLAY = object({ x: ANY_TENSOR, replay: object({}, [], true) }, ['x', 'replay'], true)
const BLOCK_OPTIONS = { recompute: optional(oneOf(['none', 'block'] as const)) }

/** One pre-norm block: `h = x + Attn(n(x))`, then `FFN(h)` (the FFN includes its residual). */
export class TransformerBlock {
  readonly attn: CausalSelfAttention
  readonly ffn: FFNModule
  readonly normWeight: Tensor
  /** What a training forward keeps: 'none' (every activation) or 'block' (the input; backward recomputes) */
  readonly recompute: 'none' | 'block'
  private readonly normGradOf: () => Tensor

  /**
   * `normGrad`, when given, supplies the gradient of normWeight (a model passes its own, lazily
   * allocated one); otherwise the block allocates it on first use. `opts.recompute`: see BlockOptions.
   */
  constructor(attn: CausalSelfAttention, ffn: FFNModule, normWeight: Tensor, normGrad?: () => Tensor, opts: BlockOptions = {}) {
    this.recompute = checkOptions('opts', opts, BLOCK_OPTIONS).recompute ?? 'none'
    arg('attn', attn, instance(CausalSelfAttention))
    const D = attn.dModel
    const f = arg('ffn', ffn, FFN_ARG) as unknown as DenseFFN | VersatileFFN | MoEFFN | LoopFFN
    if (f.dModel !== D) fail('ERR_SHAPE', `ffn: expected an FFN of width ${D} (the attention's), got ${f.dModel}`)
    arg('normWeight', normWeight, shaped([D], ['float32', 'bfloat16']))
    checkSameDevice(attn.params['att_proj.weight'], { normWeight })
    if (f.device.type !== normWeight.device.type || f.device.index !== normWeight.device.index)
      fail('ERR_DEVICE', `ffn: expected a module on ${normWeight.device}, got one on ${f.device}`)
    if (normGrad !== undefined) arg('normGrad', normGrad, func)
    this.attn = attn
    this.ffn = ffn
    this.normWeight = normWeight
    let own: Tensor | undefined
    this.normGradOf = normGrad ?? (() => (own ??= zeros(normWeight.shape, { device: normWeight.device })))
  }

  /** float32 gradient of normWeight, accumulated by backward; allocated (zeros) on first use, so inference holds none. */
  get normGrad(): Tensor {
    return this.normGradOf()
  }

  /** x [B*S, D] -> out [B*S, D]; in training also what backward needs. */
  forward(x: Tensor, B: number, S: number, opts: BlockForwardOptions = {}): { y: Tensor; saved?: BlockSaved | BlockReplay; auxLoss?: unknown; stats?: unknown } {
    const D = this.attn.dModel
    arg('B', B, int(1))
    arg('S', S, int(1))
    arg('x', x, shaped([B * S, D]))
    checkSameDevice(this.normWeight, { x })
    const o = checkOptions('opts', opts, FFN_FORWARD_OPTIONS)
    const train = o.train ?? false
    if (!train || this.recompute === 'none') return this.run(x, B, S, train, opts)
    // everything the FFN's forward depends on, so the recomputed forward repeats it exactly
    const replay = { B, S, step: opts.step ?? 0, noise: opts.noise ?? 'gumbel', seed: opts.seed ?? 0, ...(o.tau !== undefined ? { tau: o.tau } : {}) }
    const r = deferred(() => this.run(x, B, S, true, replay))
    releaseBlockSaved(r.saved!)
    return { y: r.y, auxLoss: r.auxLoss, stats: r.stats, saved: { x, replay } }
  }

  private run(x: Tensor, B: number, S: number, train: boolean, opts: BlockForwardOptions): { y: Tensor; saved?: BlockSaved; auxLoss?: unknown; stats?: unknown } {
    const { out: xn, rstd } = rmsnorm(x, this.normWeight, train)
    const h = x.clone()
    const a = this.attn.forward(xn, B, S, h)
    const f = train
      ? this.ffn.forward(h, { train: true, step: opts.step ?? 0, noise: opts.noise ?? 'gumbel', seed: opts.seed ?? 0, ...(opts.tau !== undefined ? { tau: opts.tau } : {}) })
      : this.ffn.forward(h, { train: false })
    // the FFN keeps its own reference to what it saves; this block's handle on the residual is done
    h.dispose()
    if (!train) {
      for (const t of [xn, a.qkv, a.att, a.lse]) t.dispose()
      return { y: f.y, stats: f.stats }
    }
    return { y: f.y, auxLoss: f.auxLoss, stats: f.stats, saved: { x, rstd: rstd!, attn: a, ffn: f } }
  }

  /** dy [B*S, D] -> dx; accumulates every weight gradient of the block (a VersatileFFN's balance loss scaled by auxGrad, default 1). */
  backward(saved: BlockSaved | BlockReplay, dy: Tensor, opts: { auxGrad?: number } = {}): Tensor {
    const isReplay = typeof saved === 'object' && saved !== null && 'replay' in saved
    arg('saved', saved, isReplay ? BLOCK_REPLAY : BLOCK_SAVED)
    arg('dy', dy, shaped(saved.x.shape))
    const auxGrad = checkOptions('opts', opts, { auxGrad: optional(number()) }).auxGrad ?? 1
    // recompute 'block': the forward again with the same options, then the usual backward
    if (isReplay) {
      const { B, S, ...o } = (saved as BlockReplay).replay
      return deferred(() => {
        const r = this.run(saved.x, B, S, true, o)
        r.y.dispose()
        const dx = this.backward(r.saved!, dy, { auxGrad })
        ;(r.auxLoss as Tensor | undefined)?.dispose()
        ;(r.stats as { dispose?(): void } | undefined)?.dispose?.()
        return dx
      })
    }
    saved = saved as BlockSaved
    // the dense and k-loop FFNs have no balance loss to scale
    const routed = this.ffn instanceof VersatileFFN || this.ffn instanceof MoEFFN
    const dh = routed ? (this.ffn as VersatileFFN | MoEFFN).backward(saved.ffn as never, dy, { auxGrad }) : this.ffn.backward(saved.ffn as never, dy)
    const dxn = this.attn.backward(saved.attn, dh)
    const dx = rmsnormBackward(dxn, saved.x, this.normWeight, saved.rstd, this.normGrad)
    axpy(dx, dh)
    for (const t of [dh, dxn, saved.rstd, saved.attn.xn, saved.attn.qkv, saved.attn.att, saved.attn.lse]) t.dispose()
    return dx
  }
}
