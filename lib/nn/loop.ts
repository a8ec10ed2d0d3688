// The paper's k-loop baseline (docs/SPEC.md): the dense FFN F applied k times with the same weights,
// x⁽ʲ⁾ = F(x⁽ʲ⁻¹⁾), y = x⁽ᵏ⁾: VersatileFFN's depth path with every token taking all k loops.
import { native } from '../binding'
import { fail } from '../errors'
import { Tensor } from '../tensor'
import { BackwardOptions, FFNForwardOptions, FFN_FORWARD_OPTIONS, FFN_RECOMPUTE, NORM_EPS, alloc, checkBackwardDy, checkRecord, defaultHidden, ffnParams } from './ffn'
import { MODULE_OPTIONS, Module, ModuleOptions } from './module'
import { bool, checkOptions, int, optional } from '../validate'

/** Options of LoopFFN. */
export interface LoopFFNOptions extends ModuleOptions {
  /** model width D */
  dModel: number
  /** SwiGLU intermediate size I; default 4·dModel */
  hidden?: number
  /** how many times the FFN is applied, k; default 4 (the paper's 2/4/6-loop baselines; VersatileFFN's default L) */
  loops?: number
  /**
   * Activation recompute in training: 'none' (default) saves every loop's SwiGLU pre-activations
   * [T, 2I] for backward; 'ffn' saves only each loop's input and rstd, and backward computes the
   * pre-activations again as DenseFFN does (bit-identical gradients; under bf16-mixed rounded to
   * bfloat16 as 'none' saves them). 'ffn' runs on CPU only for now (ERR_UNSUPPORTED on CUDA).
   */
  recompute?: 'none' | 'ffn'
}

/** What a LoopFFN training forward keeps for backward; dispose() frees it (backward does unless retain). */
export interface LoopFFNRecord {
  /** float32, the input's shape */
  y: Tensor<'float32'>
  stats: Record<string, never>
  auxLoss?: undefined
  /** @internal xs[j] is loop j+1's input, rstd[j] and h[j] its saved norm and pre-activations (h empty with recompute 'ffn') */
  _saved?: { owner: LoopFFN; xs: Tensor[]; rstd: Tensor[]; h: Tensor[]; shape: readonly number[] }
  /** frees the saved values (y stays) */
  dispose(): void
}

const LOOP_OPTIONS = { ...MODULE_OPTIONS, dModel: int(1), hidden: optional(int(1)), loops: optional(int(1)), recompute: FFN_RECOMPUTE }

/**
 * The k-loop FFN (docs/SPEC.md), the paper's depth-only baseline: the dense SwiGLU FFN with its
 * residual, `F(x) = x + W_out·(silu(W_gate·n(x)) ⊙ W_up·n(x))`, applied `loops` times with the same
 * three parameters (DenseFFN's names), so `y = F(F(…F(x)))`. It costs k dense FFNs per token for
 * the parameters of one. Same API as DenseFFN.
 */
export class LoopFFN extends Module {
  readonly dModel: number
  readonly hidden: number
  /** k, the number of applications */
  readonly loops: number
  /** What a training forward saves: 'none' (inputs, rstd and pre-activations of every loop) or 'ffn' (not the pre-activations; backward recomputes them) */
  readonly recompute: 'none' | 'ffn'

  constructor(opts: LoopFFNOptions) {
    if (opts === undefined) fail('ERR_ARGUMENT', 'opts: expected an options object, got undefined')
    const o = checkOptions('opts', opts, LOOP_OPTIONS, ['dModel'])
    const D = o.dModel!
    const I = o.hidden ?? defaultHidden(D)
    super(ffnParams(D, I), opts)
    this.dModel = D
    this.hidden = I
    this.loops = o.loops ?? 4
    this.recompute = o.recompute ?? 'none'
  }

  /**
   * x [..., dModel] float32 (any leading shape) -> y of the same shape, after `loops` applications
   * of the FFN; in training also what backward needs (every loop's input and pre-activations).
   */
  forward(x: Tensor, opts?: { train?: false }): { y: Tensor<'float32'>; stats: Record<string, never> }
  forward(x: Tensor, opts: FFNForwardOptions & { train: true }): LoopFFNRecord
  forward(x: Tensor, opts: FFNForwardOptions = {}): LoopFFNRecord | { y: Tensor<'float32'>; stats: Record<string, never> } {
    const train = checkOptions('opts', opts, FFN_FORWARD_OPTIONS).train ?? false
    if (train && this.recompute === 'ffn' && this.device.type !== 'cpu')
      fail('ERR_UNSUPPORTED', `recompute: 'ffn' is implemented on cpu only, this LoopFFN is on ${this.device}; use 'none' (or 'block' on a TransformerLM)`)
    const xc = this.input('x', x, this.dModel)
    const T = xc.shape[0]
    const p = this.weights
    const dev = { device: this.device }
    const xs: Tensor[] = [], rstd: Tensor[] = [], h: Tensor[] = []
    let cur = xc as Tensor<'float32'>
    for (let j = 0; j < this.loops; j++) {
      const y = alloc([T, this.dModel], dev)
      const r = train ? alloc([T], dev) : null
      // bfloat16 under bf16-mixed, as DenseFFN keeps them; none with recompute 'ffn'
      const hj = train && this.recompute === 'none' ? alloc([T, 2 * this.hidden], { device: this.device, dtype: this._savedDType }) : null
      native.ffnForward(y._id, cur._id, p['ff_norm.weight']._id, p['ff_proj.weight']._id, p['ff_out.weight']._id, r ? r._id : null, hj ? hj._id : null, NORM_EPS)
      if (train) {
        xs.push(cur)
        rstd.push(r!)
        if (hj) h.push(hj)
      } else cur.dispose()
      cur = y
    }
    if (!train) return { y: this.output(cur, x.shape), stats: {} }
    const rec: LoopFFNRecord = {
      y: this.output(cur, x.shape),
      stats: {},
      _saved: { owner: this, xs, rstd, h, shape: x.shape },
      dispose() {
        const s = rec._saved
        rec._saved = undefined
        if (s) for (const t of [...s.xs, ...s.rstd, ...s.h]) t.dispose()
      },
    }
    return rec
  }

  /** dy (the shape of y) -> dx (the shape of x), back through every loop; accumulates into grads. Frees the record's saved values unless retain. */
  backward(tr: LoopFFNRecord, dy: Tensor, opts: BackwardOptions = {}): Tensor {
    const retain = checkOptions('opts', opts, { retain: optional(bool) }).retain ?? false
    const s = checkRecord<NonNullable<LoopFFNRecord['_saved']>>(tr, this)
    const dyc = checkBackwardDy(this.input('dy', dy, this.dModel), dy, s.shape)
    const p = this.weights
    const g = this.grads
    let d = dyc
    for (let j = this.loops - 1; j >= 0; j--) {
      const dx = alloc([...d.shape], { device: this.device })
      native.ffnBackward(dx._id, g['ff_norm.weight']._id, g['ff_proj.weight']._id, g['ff_out.weight']._id, d._id, s.xs[j]._id,
        p['ff_norm.weight']._id, p['ff_proj.weight']._id, p['ff_out.weight']._id, s.rstd[j]._id, s.h[j] ? s.h[j]._id : null, NORM_EPS,
        this._savedDType === 'bfloat16')
      d.dispose()
      d = dx
    }
    if (!retain) tr.dispose()
    return this.output(d, s.shape)
  }
}
