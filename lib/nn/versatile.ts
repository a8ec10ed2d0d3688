// VersatileFFN (docs/SPEC.md): a width path over N virtual experts (slices of the shared FFN, top-K routed)
// and a depth path that reuses the whole FFN up to L times, mixed per token by λ = (L − loops)/L.
import { fail } from '../errors'
import { Tensor, seedWords } from '../tensor'
import { native } from '../binding'
import { BackwardOptions, FFNForwardOptions, FFN_FORWARD_OPTIONS, FFN_RECOMPUTE, NORM_EPS, alloc as empty, checkBackwardDy, checkRecord, defaultHidden, ffnParams } from './ffn'
import { MODULE_OPTIONS, Module, ModuleOptions } from './module'
import { arg, bool, checkOptions, int, number, optional } from '../validate'

/** Options of VersatileFFN; only dModel is required, the rest default to the paper's choices. */
export interface VersatileFFNOptions extends ModuleOptions {
  /** model width D */
  dModel: number
  /** SwiGLU intermediate size I; default 4·dModel */
  hidden?: number
  /** virtual experts N; default 8 (the paper's) */
  experts?: number
  /** experts per token K; default 2 */
  topK?: number
  /** maximum loops L; default 4 */
  maxDepth?: number
  /** expert width E; default floor(I/N); E·N must not exceed I */
  expertHidden?: number
  /** α of the load-balancing loss; default 1e-5 (the paper's text; the authors' released config uses 5e-5), 0 disables it */
  balanceLossWeight?: number
  /**
   * Activation recompute in training: 'none' (default) saves every loop's SwiGLU pre-activations
   * for backward; 'ffn' saves only each loop's input (and the width path's), and backward computes
   * the pre-activations again (one more up/gate GEMM per loop), with bit-identical gradients
   * (under bf16-mixed the recomputed values are rounded to bfloat16, as 'none' saves them). 'ffn' runs on CPU only for now (ERR_UNSUPPORTED on CUDA).
   */
  recompute?: 'none' | 'ffn'
}

/** Routing and depth per token, as tensors on the module's device. */
export interface VersatileStats {
  /** [T] int32: loops run (c+1) */
  loops: Tensor<'int32'>
  /** [T] float32: λ = (L − loops)/L */
  lambda: Tensor<'float32'>
  /** [T, K] int32: chosen experts, by descending router logit */
  experts: Tensor<'int32'>
  /** [T, K] float32: routing weights (softmax over the chosen K) */
  weights: Tensor<'float32'>
  /** [N] int32: (token, slot) assignments per expert over all T tokens (at inference tokens with λ = 0 skip the width path) */
  expertCounts: Tensor<'int32'>
  /** frees the stats tensors */
  dispose(): void
}

/** What VersatileFFN.forward returns at inference. */
export interface VersatileOutput {
  /** float32, the input's shape */
  y: Tensor<'float32'>
  /** routing and depth of every token */
  stats: VersatileStats
}

interface Saved {
  owner: VersatileFFN
  x: Tensor
  /** the caller's input shape [..., D] */
  shape: readonly number[]
  tau: number
  // h and widthH are absent with recompute 'ffn'
  t: Record<'order' | 'depthP' | 'xs' | 'rstd' | 'assign' | 'expertStart' | 'widthO' | 'xWidth' | 'routerP', Tensor> & { h?: Tensor; widthH?: Tensor }
}

/** A training forward: output, stats, the balance loss, and what backward needs. */
export interface VersatileRecord extends VersatileOutput {
  /** [1] float32: α·N·Σ_e f_e·P_e (0 when α = 0) */
  auxLoss: Tensor<'float32'>
  /** Gumbel temperature used, τ(step) = max(5·0.99984^step, 0.1) */
  tau: number
  /** @internal */ _saved?: Saved
  /** frees the saved values (y, stats and auxLoss stay) */
  dispose(): void
}

/** Options of VersatileFFN.backward. */
export interface VersatileBackwardOptions extends BackwardOptions {
  /** d(total loss)/d(auxLoss); default 1 (the balance loss is part of the objective) */
  auxGrad?: number
}

/** τ(step) = max(5·0.99984^step, 0.1); step is an integer >= 0. */
export function gumbelTemperature(step: number): number {
  arg('step', step, int(0))
  return tauAt(step)
}

// the schedule's curve at a (possibly fractional) step
const tauAt = (s: number) => Math.max(5.0 * Math.pow(0.99984, s), 0.1)

/** The step at which gumbelTemperature reaches its floor 0.1: ln(0.1/5)/ln(0.99984), about 24,448.6. */
export const GUMBEL_FLOOR_STEP = Math.log(0.1 / 5) / Math.log(0.99984)

/**
 * The paper's schedule stretched to a run of `totalSteps` steps: τ = max(5·0.99984^(step·s/totalSteps), 0.1)
 * with s = GUMBEL_FLOOR_STEP, so τ falls from 5 at step 0 to its floor 0.1 at the run's last step
 * instead of at step ≈ 24,449. For runs much shorter than the paper's, where the per-step schedule
 * hardly leaves 5. Pass it to trainStep as `temperature`.
 */
export function stretchedTemperature(step: number, totalSteps: number): number {
  arg('step', step, int(0))
  arg('totalSteps', totalSteps, int(1))
  return tauAt((Math.min(step, totalSteps) * GUMBEL_FLOOR_STEP) / totalSteps)
}

const VERSATILE_OPTIONS = {
  ...MODULE_OPTIONS, dModel: int(1), hidden: optional(int(1)), experts: optional(int(1)), topK: optional(int(1)), maxDepth: optional(int(1)),
  expertHidden: optional(int(1)), balanceLossWeight: optional(number({ min: 0 })), recompute: FFN_RECOMPUTE,
}

/** @internal checks how N experts of K per token fit in hidden I; returns the expert width E */
export function checkVersatileSizes(I: number, N: number, K: number, expertHidden: number | undefined): number {
  if (K > N) fail('ERR_ARGUMENT', `topK: expected at most experts (${N}), got ${K}`)
  if (N > I) fail('ERR_ARGUMENT', `experts: expected at most hidden (${I}) experts, got ${N}`)
  const E = arg('expertHidden', expertHidden ?? Math.floor(I / N), int(1))
  if (E * N > I)
    fail('ERR_ARGUMENT', `expertHidden: experts·expertHidden must not exceed hidden (slices may not overlap): ${N}·${E} = ${N * E} > ${I}`)
  return E
}

/**
 * VersatileFFN (docs/SPEC.md): one SwiGLU FFN reused in width, as N top-K routed virtual experts
 * (slices of its weights), and in depth, up to L loops with per-token early exit, fused per token
 * by λ = (L − loops)/L. Holds its five parameters and their gradients; forward and backward are explicit.
 */
export class VersatileFFN extends Module {
  readonly dModel: number
  readonly hidden: number
  readonly experts: number
  readonly topK: number
  readonly maxDepth: number
  readonly expertHidden: number
  readonly balanceLossWeight: number
  /** What a training forward saves: 'none' (everything) or 'ffn' (the loop inputs; backward recomputes the rest) */
  readonly recompute: 'none' | 'ffn'

  constructor(opts: VersatileFFNOptions) {
    if (opts === undefined) fail('ERR_ARGUMENT', 'opts: expected an options object, got undefined')
    const o = checkOptions('opts', opts, VERSATILE_OPTIONS, ['dModel'])
    const D = o.dModel!, I = o.hidden ?? defaultHidden(D), N = o.experts ?? 8, K = o.topK ?? 2, L = o.maxDepth ?? 4
    const E = checkVersatileSizes(I, N, K, o.expertHidden)
    const alpha = o.balanceLossWeight ?? 1e-5
    super(
      [
        ...ffnParams(D, I),
        { name: 'expert_gate.weight', shape: [N, D], init: 'normal' },
        { name: 'depth_predictor.weight', shape: [L, D], init: 'normal' },
      ],
      opts,
    )
    this.dModel = D
    this.hidden = I
    this.experts = N
    this.topK = K
    this.maxDepth = L
    this.expertHidden = E
    this.balanceLossWeight = alpha
    this.recompute = o.recompute ?? 'none'
  }

  private args(x: Tensor): Record<string, unknown> {
    const p = this.weights
    return {
      x, normW: p['ff_norm.weight'], projW: p['ff_proj.weight'], outW: p['ff_out.weight'],
      routerW: p['expert_gate.weight'], depthW: p['depth_predictor.weight'],
      experts: this.experts, topK: this.topK, maxDepth: this.maxDepth, expertHidden: this.expertHidden,
      eps: NORM_EPS, balanceWeight: this.balanceLossWeight,
    }
  }

  /**
   * x [..., dModel] float32 (any leading shape, e.g. batch × sequence) -> y of the same shape;
   * stats are per token in row-major order ([T], [T, K], T = the product of the leading sizes). Inference: each token runs argmax-many loops and stops (early exit).
   * Training: all loops and the width path run; `noise` 'gumbel' (default) or 'none'; `seed` the
   * Philox key of the noise (default derived from the module's seed and `step`); `tau` the Gumbel
   * temperature (default gumbelTemperature(step); stretchedTemperature gives the schedule over a run's length).
   */
  forward(x: Tensor, opts?: { train?: false }): VersatileOutput
  forward(x: Tensor, opts: FFNForwardOptions & { train: true }): VersatileRecord
  forward(x: Tensor, opts: FFNForwardOptions = {}): VersatileOutput | VersatileRecord {
    const o = checkOptions('opts', opts, FFN_FORWARD_OPTIONS)
    const train = o.train ?? false
    let step = 0, noise = false, seed: [number, number] = [0, 0]
    if (o.tau !== undefined && !train) fail('ERR_ARGUMENT', 'opts.tau: only for training (train: true); inference takes no noise')
    if (train) {
      step = o.step ?? 0
      noise = (o.noise ?? 'gumbel') === 'gumbel'
      seed = seedWords(o.seed ?? ((BigInt(this.seed) * 0x9e3779b97f4a7c15n + BigInt(step)) & ((1n << 64n) - 1n)))
    }
    if (train && this.recompute === 'ffn' && this.device.type !== 'cpu')
      fail('ERR_UNSUPPORTED', `recompute: 'ffn' is implemented on cpu only, this VersatileFFN is on ${this.device}; use 'none' (or 'block' on a TransformerLM)`)
    const xc = this.input('x', x, this.dModel)
    const T = xc.shape[0], D = this.dModel, I = this.hidden, N = this.experts, K = this.topK, L = this.maxDepth, E = this.expertHidden
    const dev = { device: this.device }
    const i32 = { device: this.device, dtype: 'int32' as const }
    const y = empty([T, D], dev)
    const st = {
      loops: empty([T], i32), lambda: empty([T], dev), experts: empty([T, K], i32), weights: empty([T, K], dev),
      expertCounts: empty([N], i32),
    }
    const stats: VersatileStats = { ...st, dispose: () => Object.values(st).forEach((t) => t.dispose()) }
    const aux = empty([1], dev)
    const tau = o.tau ?? gumbelTemperature(step)
    const outs = { y, loops: st.loops, lambda: st.lambda, expertsOut: st.experts, weights: st.weights, expertCounts: st.expertCounts, aux }
    if (!train) {
      native.versatileForward({ ...this.args(xc), ...outs, train: false, noise: false, seedLo: 0, seedHi: 0, tau })
      xc.dispose()
      aux.dispose()
      return { y: this.output(y, x.shape), stats }
    }
    const t: Saved['t'] = {
      order: empty([T], i32), depthP: empty([T, L], dev), xs: empty([L + 1, T, D], dev), rstd: empty([L, T], dev),
      assign: empty([T * K], i32), expertStart: empty([N + 1], i32),
      widthO: empty([T * K, D], dev), xWidth: empty([T, D], dev), routerP: empty([T, N], dev),
    }
    if (this.recompute === 'none') {
      // every loop's SwiGLU pre-activations, by far the largest saved value, and the width path's:
      // bfloat16 under bf16-mixed
      t.h = empty([L, T, 2 * I], { device: this.device, dtype: this._savedDType })
      t.widthH = empty([T * K, 2 * E], { device: this.device, dtype: this._savedDType })
    }
    native.versatileForward({ ...this.args(xc), ...outs, saved: t, train: true, noise, seedLo: seed[0], seedHi: seed[1], tau })
    const rec: VersatileRecord = {
      y: this.output(y, x.shape), stats, auxLoss: aux, tau,
      _saved: { owner: this, x: xc, shape: x.shape, tau, t },
      dispose() {
        const s = rec._saved
        rec._saved = undefined
        if (s) for (const v of [s.x, ...Object.values(s.t)]) v.dispose()
      },
    }
    return rec
  }

  /** dy (the shape of y) -> dx (the shape of x); accumulates all five gradients (the balance loss's included, scaled by auxGrad). */
  backward(tr: VersatileRecord, dy: Tensor, opts: VersatileBackwardOptions = {}): Tensor {
    const o = checkOptions('opts', opts, { retain: optional(bool), auxGrad: optional(number()) })
    const s = checkRecord<Saved>(tr, this)
    const auxGrad = o.auxGrad ?? 1
    const dyc = checkBackwardDy(this.input('dy', dy, this.dModel), dy, s.shape, tr.stats)
    const g = this.grads
    const dx = empty([...s.x.shape], { device: this.device })
    const st = tr.stats
    native.versatileBackward({
      ...this.args(s.x), dx, dy: dyc,
      dNormW: g['ff_norm.weight'], dProjW: g['ff_proj.weight'], dOutW: g['ff_out.weight'],
      dRouterW: g['expert_gate.weight'], dDepthW: g['depth_predictor.weight'],
      loops: st.loops, lambda: st.lambda, expertsOut: st.experts, weights: st.weights, expertCounts: st.expertCounts,
      // recompute: the backward rounds the recomputed pre-activations as forward would have saved them
      saved: s.t.h ? s.t : { ...s.t, recomputeBf16: this._savedDType === 'bfloat16' }, tau: s.tau, auxGrad,
    })
    dyc.dispose()
    if (!o.retain) tr.dispose()
    return this.output(dx, s.shape)
  }
}
