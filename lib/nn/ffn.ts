// The dense SwiGLU FFN of docs/SPEC.md with its residual, the baseline VersatileFFN is measured against:
// F(x) = x + W_out · (silu(W_gate · n(x)) ⊙ (W_up · n(x))).
import { native } from '../binding'
import { fail, show } from '../errors'
import { DType, Tensor, TensorOptions, empty, full } from '../tensor'
import { MODULE_OPTIONS, Module, ModuleOptions, ParamSpec } from './module'
import { bool, checkOptions, int, oneOf, optional, seed64, number } from '../validate'

export const NORM_EPS = 1e-6

/** @internal test hook: when set, outputs and saved values start as NaN (so unwritten memory shows) */
export const _ffnTestHooks = { poison: false }
/** @internal allocates an output of an FFN op */
export const alloc = <E extends DType = 'float32'>(shape: number[], opts: TensorOptions & { dtype?: E }): Tensor<E> =>
  (_ffnTestHooks.poison ? full(shape, opts.dtype === 'int32' ? -7 : NaN, opts) : empty(shape, opts)) as Tensor<E>

/** Default SwiGLU intermediate size for a model width D: 4·D, the paper's ratio (I = 4D in every config). */
export const defaultHidden = (dModel: number): number => 4 * dModel

/** Options of DenseFFN. */
export interface DenseFFNOptions extends ModuleOptions {
  /** model width D */
  dModel: number
  /** SwiGLU intermediate size I; default 4·dModel */
  hidden?: number
  /**
   * Activation recompute in training: 'none' (default) saves the SwiGLU pre-activations [T, 2I]
   * for backward; 'ffn' saves only the input and its norm's rstd, and backward computes the
   * pre-activations again (bit-identical gradients; under bf16-mixed they are rounded to bfloat16
   * as the forward saves them). 'ffn' runs on CPU only for now.
   */
  recompute?: 'none' | 'ffn'
}

/** Options of forward for both FFN modules. */
export interface FFNForwardOptions {
  train?: boolean
  /** accepted for API symmetry with VersatileFFN; the dense FFN has no noise or schedule */
  step?: number
  noise?: 'gumbel' | 'none'
  seed?: number | bigint
  /** VersatileFFN in training: the Gumbel temperature τ (> 0); default gumbelTemperature(step). The other FFNs ignore it. */
  tau?: number
}

/** What a training forward keeps for backward; dispose() frees it (backward does unless retain). */
export interface DenseFFNRecord {
  /** float32, the input's shape */
  y: Tensor<'float32'>
  stats: Record<string, never>
  auxLoss?: undefined
  /** @internal h is absent with recompute 'ffn' */ _saved?: { owner: DenseFFN; x: Tensor; rstd: Tensor; h?: Tensor; shape: readonly number[] }
  /** frees the saved values (y stays) */
  dispose(): void
}

/** Options of backward for both FFN modules. */
export interface BackwardOptions {
  /** keep the record's saved tensors after backward (to call backward again). Default false. */
  retain?: boolean
}

/** @internal checks a training record for backward */
export function checkRecord<S extends { owner: unknown }>(tr: unknown, owner: unknown): S {
  if (typeof tr !== 'object' || tr === null || !('_saved' in tr))
    fail('ERR_ARGUMENT', `tr: expected the record of forward(x, { train: true }), got ${show(tr)}`)
  const s = (tr as { _saved?: S })._saved
  if (!s) fail('ERR_ARGUMENT', 'tr: this training record has been disposed or used by backward already')
  if (s.owner !== owner) fail('ERR_ARGUMENT', 'tr: this training record belongs to another module')
  return s
}

/**
 * @internal a backward's dy, already read by the module's `input` (dyc), checked against the
 * record: the forward's shape, and for the routed modules that the record's stats are alive.
 * Returns dyc; on a failure disposes it first.
 */
export function checkBackwardDy(dyc: Tensor, dy: Tensor, shape: readonly number[], stats?: object): Tensor {
  if (dy.shape.join() !== shape.join()) {
    dyc.dispose()
    fail('ERR_SHAPE', `dy: expected shape ${show(shape)}, got ${show(dy.shape)}`)
  }
  for (const [k, v] of Object.entries(stats ?? {}))
    if (v instanceof Tensor && v.disposed) {
      dyc.dispose()
      fail('ERR_DISPOSED', `tr.stats.${k}: backward needs the record's stats; they have been disposed`)
    }
  return dyc
}

/** @internal the shared SwiGLU FFN's parameters at width D and intermediate I (every FFN module has them) */
export function ffnParams(D: number, I: number): ParamSpec[] {
  return [
    { name: 'ff_norm.weight', shape: [D], init: 'ones' },
    { name: 'ff_proj.weight', shape: [2 * I, D], init: 'normal', bf16: true },
    { name: 'ff_out.weight', shape: [D, I], init: 'normal', bf16: true },
  ]
}

/** The forward options both FFN modules take (the dense FFN ignores all but `train`). */
export const FFN_FORWARD_OPTIONS = { train: optional(bool), step: optional(int(0)), noise: optional(oneOf(['gumbel', 'none'] as const)), seed: optional(seed64), tau: optional(number({ exclusiveMin: 0 })) }
/** @internal the recompute option of both FFN modules */
export const FFN_RECOMPUTE = optional(oneOf(['none', 'ffn'] as const))
const DENSE_OPTIONS = { ...MODULE_OPTIONS, dModel: int(1), hidden: optional(int(1)), recompute: FFN_RECOMPUTE }

/**
 * The dense SwiGLU FFN with its residual, `x + W_out·(silu(W_gate·n(x)) ⊙ W_up·n(x))` (docs/SPEC.md):
 * the baseline VersatileFFN is compared with. Same API as VersatileFFN, three parameters.
 */
export class DenseFFN extends Module {
  readonly dModel: number
  readonly hidden: number
  /** What a training forward saves: 'none' (the pre-activations too) or 'ffn' (input and rstd; backward recomputes) */
  readonly recompute: 'none' | 'ffn'

  constructor(opts: DenseFFNOptions) {
    if (opts === undefined) fail('ERR_ARGUMENT', 'opts: expected an options object, got undefined')
    const o = checkOptions('opts', opts, DENSE_OPTIONS, ['dModel'])
    const D = o.dModel!
    const I = o.hidden ?? defaultHidden(D)
    super(ffnParams(D, I), opts)
    this.dModel = D
    this.hidden = I
    this.recompute = o.recompute ?? 'none'
  }

  /**
   * x [..., dModel] float32 (any leading shape, e.g. batch × sequence) -> y of the same shape;
   * in training also what backward needs.
   */
  forward(x: Tensor, opts?: { train?: false }): { y: Tensor<'float32'>; stats: Record<string, never> }
  forward(x: Tensor, opts: FFNForwardOptions & { train: true }): DenseFFNRecord
  forward(x: Tensor, opts: FFNForwardOptions = {}): DenseFFNRecord | { y: Tensor<'float32'>; stats: Record<string, never> } {
    const train = checkOptions('opts', opts, FFN_FORWARD_OPTIONS).train ?? false
    if (train && this.recompute === 'ffn' && this.device.type !== 'cpu')
      fail('ERR_UNSUPPORTED', `recompute: 'ffn' is implemented on cpu only, this DenseFFN is on ${this.device}; use 'none' (or 'block' on a TransformerLM)`)
    const xc = this.input('x', x, this.dModel)
    const T = xc.shape[0]
    const p = this.weights
    const y = alloc([T, this.dModel], { device: this.device })
    if (!train) {
      native.ffnForward(y._id, xc._id, p['ff_norm.weight']._id, p['ff_proj.weight']._id, p['ff_out.weight']._id, null, null, NORM_EPS)
      xc.dispose()
      return { y: this.output(y, x.shape), stats: {} }
    }
    const rstd = alloc([T], { device: this.device })
    // the SwiGLU pre-activations, the largest saved value, are kept in bfloat16 under bf16-mixed;
    // with recompute 'ffn' not at all (backward computes them again and rounds them the same way)
    const h = this.recompute === 'none' ? alloc([T, 2 * this.hidden], { device: this.device, dtype: this._savedDType }) : undefined
    native.ffnForward(y._id, xc._id, p['ff_norm.weight']._id, p['ff_proj.weight']._id, p['ff_out.weight']._id, rstd._id, h ? h._id : null, NORM_EPS)
    const rec: DenseFFNRecord = {
      y: this.output(y, x.shape),
      stats: {},
      _saved: { owner: this, x: xc, rstd, h, shape: x.shape },
      dispose() {
        const s = rec._saved
        rec._saved = undefined
        if (s) for (const t of [s.x, s.rstd, s.h]) t?.dispose()
      },
    }
    return rec
  }

  /** dy (the shape of y) -> dx (the shape of x); accumulates into grads. Frees the record's saved values unless retain. */
  backward(tr: DenseFFNRecord, dy: Tensor, opts: BackwardOptions = {}): Tensor {
    const retain = checkOptions('opts', opts, { retain: optional(bool) }).retain ?? false
    const s = checkRecord<NonNullable<DenseFFNRecord['_saved']>>(tr, this)
    const dyc = checkBackwardDy(this.input('dy', dy, this.dModel), dy, s.shape)
    const p = this.weights
    const g = this.grads
    const dx = alloc([...s.x.shape], { device: this.device })
    native.ffnBackward(dx._id, g['ff_norm.weight']._id, g['ff_proj.weight']._id, g['ff_out.weight']._id, dyc._id, s.x._id,
      p['ff_norm.weight']._id, p['ff_proj.weight']._id, p['ff_out.weight']._id, s.rstd._id, s.h ? s.h._id : null, NORM_EPS,
      this._savedDType === 'bfloat16')
    dyc.dispose()
    if (!retain) tr.dispose()
    return this.output(dx, s.shape)
  }
}
