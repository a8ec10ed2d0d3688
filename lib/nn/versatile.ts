// VersatileFFN (SPEC.md): a width path over N virtual experts (slices of the shared FFN, top-K routed)
// and a depth path that reuses the whole FFN up to L times, mixed per token by λ = (L − loops)/L.
import { fail, show } from '../errors'
import { Tensor, seedWords } from '../tensor'
import { native } from '../binding'
import { BackwardOptions, FFNForwardOptions, FFN_FORWARD_OPTIONS, NORM_EPS, alloc as empty, checkRecord } from './ffn'
import { MODULE_OPTIONS, Module, ModuleOptions } from './module'
import { arg, bool, checkOptions, int, number, optional } from '../validate'

export interface VersatileFFNOptions extends ModuleOptions {
  dModel: number
  /** SwiGLU intermediate size I */
  hidden: number
  /** virtual experts N (paper: 8) */
  experts: number
  /** experts per token K (paper: 2) */
  topK: number
  /** maximum loops L (paper: 4) */
  maxDepth: number
  /** expert width E; default floor(I/N); E·N must not exceed I */
  expertHidden?: number
  /** α of the load-balancing loss; default 1e-5 (the paper's text; the authors' released config uses 5e-5), 0 disables it */
  balanceLossWeight?: number
}

/** Routing and depth per token, as tensors on the module's device. */
export interface VersatileStats {
  /** [T] int32: loops run (c+1) */
  loops: Tensor
  /** [T] float32: λ = (L − loops)/L */
  lambda: Tensor
  /** [T, K] int32: chosen experts, by descending router logit */
  experts: Tensor
  /** [T, K] float32: routing weights (softmax over the chosen K) */
  weights: Tensor
  /** [N] int32: (token, slot) assignments per expert over all T tokens (at inference tokens with λ = 0 skip the width path) */
  expertCounts: Tensor
  /** frees the stats tensors */
  dispose(): void
}

export interface VersatileOutput {
  y: Tensor
  stats: VersatileStats
}

interface Saved {
  owner: VersatileFFN
  x: Tensor
  tau: number
  t: Record<'order' | 'depthP' | 'xs' | 'rstd' | 'h' | 'assign' | 'expertStart' | 'widthH' | 'widthO' | 'xWidth' | 'routerP', Tensor>
}

/** A training forward: output, stats, the balance loss, and what backward needs. */
export interface VersatileRecord extends VersatileOutput {
  /** [1] float32: α·N·Σ_e f_e·P_e (0 when α = 0) */
  auxLoss: Tensor
  /** Gumbel temperature used, τ(step) = max(5·0.99984^step, 0.1) */
  tau: number
  /** @internal */ _saved?: Saved
  /** frees the saved values (y, stats and auxLoss stay) */
  dispose(): void
}

export interface VersatileBackwardOptions extends BackwardOptions {
  /** d(total loss)/d(auxLoss); default 1 (the balance loss is part of the objective) */
  auxGrad?: number
}

/** τ(step) = max(5·0.99984^step, 0.1); step is an integer >= 0. */
export function gumbelTemperature(step: number): number {
  arg('step', step, int(0))
  return Math.max(5.0 * Math.pow(0.99984, step), 0.1)
}

const VERSATILE_OPTIONS = {
  ...MODULE_OPTIONS, dModel: int(1), hidden: int(1), experts: int(1), topK: int(1), maxDepth: int(1),
  expertHidden: optional(int(1)), balanceLossWeight: optional(number({ min: 0 })),
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

export class VersatileFFN extends Module {
  readonly dModel: number
  readonly hidden: number
  readonly experts: number
  readonly topK: number
  readonly maxDepth: number
  readonly expertHidden: number
  readonly balanceLossWeight: number

  constructor(opts: VersatileFFNOptions) {
    if (opts === undefined) fail('ERR_ARGUMENT', 'opts: expected an options object, got undefined')
    const o = checkOptions('opts', opts, VERSATILE_OPTIONS, ['dModel', 'hidden', 'experts', 'topK', 'maxDepth'])
    const D = o.dModel!, I = o.hidden!, N = o.experts!, K = o.topK!, L = o.maxDepth!
    const E = checkVersatileSizes(I, N, K, o.expertHidden)
    const alpha = o.balanceLossWeight ?? 1e-5
    super(
      [
        { name: 'ff_norm.weight', shape: [D], init: 'ones' },
        { name: 'ff_proj.weight', shape: [2 * I, D], init: 'normal' },
        { name: 'ff_out.weight', shape: [D, I], init: 'normal' },
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
  }

  private args(x: Tensor): Record<string, unknown> {
    const p = this.params
    return {
      x, normW: p['ff_norm.weight'], projW: p['ff_proj.weight'], outW: p['ff_out.weight'],
      routerW: p['expert_gate.weight'], depthW: p['depth_predictor.weight'],
      experts: this.experts, topK: this.topK, maxDepth: this.maxDepth, expertHidden: this.expertHidden,
      eps: NORM_EPS, balanceWeight: this.balanceLossWeight,
    }
  }

  /**
   * x [T, dModel] float32 -> y. Inference: each token runs argmax-many loops and stops (early exit).
   * Training: all loops and the width path run; `noise` 'gumbel' (default) or 'none'; `seed` the
   * Philox key of the noise (default derived from the module's seed and `step`).
   */
  forward(x: Tensor, opts?: { train?: false }): VersatileOutput
  forward(x: Tensor, opts: FFNForwardOptions & { train: true }): VersatileRecord
  forward(x: Tensor, opts: FFNForwardOptions = {}): VersatileOutput | VersatileRecord {
    const o = checkOptions('opts', opts, FFN_FORWARD_OPTIONS)
    const train = o.train ?? false
    let step = 0, noise = false, seed: [number, number] = [0, 0]
    if (train) {
      step = o.step ?? 0
      noise = (o.noise ?? 'gumbel') === 'gumbel'
      seed = seedWords(o.seed ?? ((BigInt(this.seed) * 0x9e3779b97f4a7c15n + BigInt(step)) & ((1n << 64n) - 1n)))
    }
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
    const tau = gumbelTemperature(step)
    const outs = { y, loops: st.loops, lambda: st.lambda, expertsOut: st.experts, weights: st.weights, expertCounts: st.expertCounts, aux }
    if (!train) {
      native.versatileForward({ ...this.args(xc), ...outs, train: false, noise: false, seedLo: 0, seedHi: 0, tau })
      xc.dispose()
      aux.dispose()
      return { y, stats }
    }
    const t: Saved['t'] = {
      order: empty([T], i32), depthP: empty([T, L], dev), xs: empty([L + 1, T, D], dev), rstd: empty([L, T], dev),
      h: empty([L, T, 2 * I], dev), assign: empty([T * K], i32), expertStart: empty([N + 1], i32),
      widthH: empty([T * K, 2 * E], dev), widthO: empty([T * K, D], dev), xWidth: empty([T, D], dev), routerP: empty([T, N], dev),
    }
    native.versatileForward({ ...this.args(xc), ...outs, saved: t, train: true, noise, seedLo: seed[0], seedHi: seed[1], tau })
    const rec: VersatileRecord = {
      y, stats, auxLoss: aux, tau,
      _saved: { owner: this, x: xc, tau, t },
      dispose() {
        const s = rec._saved
        rec._saved = undefined
        if (s) for (const v of [s.x, ...Object.values(s.t)]) v.dispose()
      },
    }
    return rec
  }

  /** dy [T, dModel] -> dx; accumulates all five gradients (the balance loss's included, scaled by auxGrad). */
  backward(tr: VersatileRecord, dy: Tensor, opts: VersatileBackwardOptions = {}): Tensor {
    const o = checkOptions('opts', opts, { retain: optional(bool), auxGrad: optional(number()) })
    const s = checkRecord<Saved>(tr, this)
    const auxGrad = o.auxGrad ?? 1
    const dyc = this.input('dy', dy, this.dModel)
    if (dyc.shape[0] !== s.x.shape[0]) {
      dyc.dispose()
      fail('ERR_SHAPE', `dy: expected shape ${show(s.x.shape)}, got ${show(dy.shape)}`)
    }
    for (const [k, v] of Object.entries(tr.stats))
      if (v instanceof Tensor && v.disposed) {
        dyc.dispose()
        fail('ERR_DISPOSED', `tr.stats.${k}: backward needs the record's stats; they have been disposed`)
      }
    const g = this.grads
    const dx = empty([...s.x.shape], { device: this.device })
    const st = tr.stats
    native.versatileBackward({
      ...this.args(s.x), dx, dy: dyc,
      dNormW: g['ff_norm.weight'], dProjW: g['ff_proj.weight'], dOutW: g['ff_out.weight'],
      dRouterW: g['expert_gate.weight'], dDepthW: g['depth_predictor.weight'],
      loops: st.loops, lambda: st.lambda, expertsOut: st.experts, weights: st.weights, expertCounts: st.expertCounts,
      saved: s.t, tau: s.tau, auxGrad,
    })
    dyc.dispose()
    if (!o.retain) tr.dispose()
    return dx
  }
}
