// The paper's mixture-of-experts baseline (docs/SPEC.md): N separate SwiGLU experts, top-K routed by
// VersatileFFN's router with its balance loss, run by the width path's fused grouped GEMM over
// stacked expert weights (expert e owns intermediate columns [e·E, (e+1)·E)).
import { fail } from '../errors'
import { Tensor } from '../tensor'
import { native } from '../binding'
import { BackwardOptions, FFNForwardOptions, FFN_FORWARD_OPTIONS, FFN_RECOMPUTE, NORM_EPS, alloc as empty, checkBackwardDy, checkRecord, defaultHidden, ffnParams } from './ffn'
import { MODULE_OPTIONS, Module, ModuleOptions } from './module'
import { arg, bool, checkOptions, int, number, optional } from '../validate'

/** Options of MoEFFN; only dModel is required. */
export interface MoEFFNOptions extends ModuleOptions {
  /** model width D */
  dModel: number
  /** experts N; default 8 (VersatileFFN's) */
  experts?: number
  /** experts per token K; default 2 */
  topK?: number
  /**
   * SwiGLU width E of one expert; default floor(4·dModel / topK), so that the K active experts
   * together are as wide as the dense FFN of the paper's width I = 4D (equal active parameters)
   */
  expertHidden?: number
  /** α of the load-balancing loss; default 1e-5 (VersatileFFN's), 0 disables it */
  balanceLossWeight?: number
  /**
   * Activation recompute in training: 'none' (default) saves the experts' SwiGLU pre-activations
   * [T·K, 2E] for backward; 'ffn' does not, and backward computes them again from the input and
   * its saved rstd, in the forward's tasks (bit-identical gradients). 'ffn' runs on CPU only for
   * now (ERR_UNSUPPORTED on CUDA).
   */
  recompute?: 'none' | 'ffn'
}

/** Routing per token, as tensors on the module's device. */
export interface MoEStats {
  /** [T, K] int32: chosen experts, by descending router logit */
  experts: Tensor<'int32'>
  /** [T, K] float32: routing weights (softmax over the chosen K) */
  weights: Tensor<'float32'>
  /** [N] int32: (token, slot) assignments per expert over all T tokens */
  expertCounts: Tensor<'int32'>
  /** frees the stats tensors */
  dispose(): void
}

/** What MoEFFN.forward returns at inference. */
export interface MoEOutput {
  /** float32, the input's shape */
  y: Tensor<'float32'>
  /** routing of every token */
  stats: MoEStats
}

interface Saved {
  owner: MoEFFN
  x: Tensor
  shape: readonly number[]
  // widthH is absent with recompute 'ffn'
  t: Record<'rstd' | 'assign' | 'expertStart' | 'widthO' | 'routerP', Tensor> & { widthH?: Tensor }
}

/** A training forward: output, stats, the balance loss, and what backward needs. */
export interface MoERecord extends MoEOutput {
  /** [1] float32: α·N·Σ_e f_e·P_e (0 when α = 0) */
  auxLoss: Tensor<'float32'>
  /** @internal */ _saved?: Saved
  /** frees the saved values (y, stats and auxLoss stay) */
  dispose(): void
}

/** Options of MoEFFN.backward. */
export interface MoEBackwardOptions extends BackwardOptions {
  /** d(total loss)/d(auxLoss); default 1 (the balance loss is part of the objective) */
  auxGrad?: number
}

const MOE_OPTIONS = {
  ...MODULE_OPTIONS, dModel: int(1), experts: optional(int(1)), topK: optional(int(1)), expertHidden: optional(int(1)),
  balanceLossWeight: optional(number({ min: 0 })), recompute: FFN_RECOMPUTE,
}

/** @internal checks N experts of K per token; returns the expert width E (default floor(I/K), I the dense width) */
export function checkMoESizes(I: number, N: number, K: number, expertHidden: number | undefined): number {
  if (K > N) fail('ERR_ARGUMENT', `topK: expected at most experts (${N}), got ${K}`)
  const E = arg('expertHidden', expertHidden ?? Math.max(1, Math.floor(I / K)), int(1))
  if (N * E > 2 ** 31 - 1) fail('ERR_ARGUMENT', `expertHidden: experts·expertHidden must stay below 2^31, got ${N}·${E}`)
  return E
}

/**
 * A mixture-of-experts SwiGLU FFN with its residual (docs/SPEC.md), the paper's MoE baseline:
 * `y = x + Σ_k w_k·FFN_{e_k}(x)` over N separate experts, each token routed to K of them by
 * VersatileFFN's router (top-K logits of `W_r·x`, softmax over the chosen K) with the same
 * balance loss. The experts' weights are stacked in `ff_proj.weight` [2·N·E, D] and
 * `ff_out.weight` [D, N·E] (expert e: rows e·E..e·E+E−1 of each half, the same columns), so one
 * fused grouped GEMM runs them all. Holds four parameters and their gradients.
 */
export class MoEFFN extends Module {
  readonly dModel: number
  readonly experts: number
  readonly topK: number
  readonly expertHidden: number
  readonly balanceLossWeight: number
  /** What a training forward saves: 'none' (everything) or 'ffn' (not the experts' pre-activations; backward recomputes them) */
  readonly recompute: 'none' | 'ffn'

  constructor(opts: MoEFFNOptions) {
    if (opts === undefined) fail('ERR_ARGUMENT', 'opts: expected an options object, got undefined')
    const o = checkOptions('opts', opts, MOE_OPTIONS, ['dModel'])
    const D = o.dModel!, N = o.experts ?? 8, K = o.topK ?? 2
    const E = checkMoESizes(defaultHidden(D), N, K, o.expertHidden)
    super(
      [
        ...ffnParams(D, N * E),
        { name: 'expert_gate.weight', shape: [N, D], init: 'normal' },
      ],
      opts,
    )
    this.dModel = D
    this.experts = N
    this.topK = K
    this.expertHidden = E
    this.balanceLossWeight = o.balanceLossWeight ?? 1e-5
    this.recompute = o.recompute ?? 'none'
  }

  /**
   * The experts under Hugging Face OLMoE's per-expert names, for export to that layout:
   * `gate.weight` (the router), `experts.{e}.up_proj.weight` and `experts.{e}.gate_proj.weight`
   * [E, D] (views of the live `ff_proj.weight` rows) and `experts.{e}.down_proj.weight` [D, E]
   * (a contiguous copy of `ff_out.weight`'s columns e·E.., which a view could not be). The norm
   * gain is `ff_norm.weight` of stateDict(). Dispose the returned handles when done.
   */
  expertStateDict(): Record<string, Tensor> {
    const p = this.params, N = this.experts, E = this.expertHidden
    const out: Record<string, Tensor> = { 'gate.weight': p['expert_gate.weight'].rows(0, N) }
    for (let e = 0; e < N; e++) {
      out[`experts.${e}.up_proj.weight`] = p['ff_proj.weight'].rows(e * E, (e + 1) * E)
      out[`experts.${e}.gate_proj.weight`] = p['ff_proj.weight'].rows((N + e) * E, (N + e + 1) * E)
      const down = p['ff_out.weight'].cols(e * E, (e + 1) * E)
      out[`experts.${e}.down_proj.weight`] = down.contiguous()
      down.dispose()
    }
    return out
  }

  // under bf16-mixed the experts' matrices are read as their bfloat16 copies; the router stays float32
  private args(x: Tensor): Record<string, unknown> {
    const p = this.weights
    return {
      x, normW: p['ff_norm.weight'], projW: p['ff_proj.weight'], outW: p['ff_out.weight'], routerW: p['expert_gate.weight'],
      experts: this.experts, topK: this.topK, expertHidden: this.expertHidden, eps: NORM_EPS, balanceWeight: this.balanceLossWeight,
    }
  }

  /**
   * x [..., dModel] float32 (any leading shape) -> y of the same shape; stats per token in
   * row-major order ([T, K], T = the product of the leading sizes). The routing is deterministic:
   * training differs from inference only in what it keeps (and the balance loss); `step`, `noise`
   * and `seed` are accepted for API symmetry and ignored.
   */
  forward(x: Tensor, opts?: { train?: false }): MoEOutput
  forward(x: Tensor, opts: FFNForwardOptions & { train: true }): MoERecord
  forward(x: Tensor, opts: FFNForwardOptions = {}): MoEOutput | MoERecord {
    const train = checkOptions('opts', opts, FFN_FORWARD_OPTIONS).train ?? false
    if (train && this.recompute === 'ffn' && this.device.type !== 'cpu')
      fail('ERR_UNSUPPORTED', `recompute: 'ffn' is implemented on cpu only, this MoEFFN is on ${this.device}; use 'none' (or 'block' on a TransformerLM)`)
    const xc = this.input('x', x, this.dModel)
    const T = xc.shape[0], D = this.dModel, N = this.experts, K = this.topK, E = this.expertHidden
    const dev = { device: this.device }
    const i32 = { device: this.device, dtype: 'int32' as const }
    const y = empty([T, D], dev)
    const st = { experts: empty([T, K], i32), weights: empty([T, K], dev), expertCounts: empty([N], i32) }
    const stats: MoEStats = { ...st, dispose: () => Object.values(st).forEach((t) => t.dispose()) }
    const aux = empty([1], dev)
    const outs = { y, expertsOut: st.experts, weights: st.weights, expertCounts: st.expertCounts, aux }
    if (!train) {
      native.moeForward({ ...this.args(xc), ...outs, train: false })
      xc.dispose()
      aux.dispose()
      return { y: this.output(y, x.shape), stats }
    }
    const t: Saved['t'] = {
      rstd: empty([T], dev), assign: empty([T * K], i32), expertStart: empty([N + 1], i32),
      widthO: empty([T * K, D], dev), routerP: empty([T, N], dev),
    }
    if (this.recompute === 'none') t.widthH = empty([T * K, 2 * E], dev)
    native.moeForward({ ...this.args(xc), ...outs, saved: t, train: true })
    const rec: MoERecord = {
      y: this.output(y, x.shape), stats, auxLoss: aux,
      _saved: { owner: this, x: xc, shape: x.shape, t },
      dispose() {
        const s = rec._saved
        rec._saved = undefined
        if (s) for (const v of [s.x, ...Object.values(s.t)]) v.dispose()
      },
    }
    return rec
  }

  /** dy (the shape of y) -> dx (the shape of x); accumulates all four gradients (the balance loss's included, scaled by auxGrad). */
  backward(tr: MoERecord, dy: Tensor, opts: MoEBackwardOptions = {}): Tensor {
    const o = checkOptions('opts', opts, { retain: optional(bool), auxGrad: optional(number()) })
    const s = checkRecord<Saved>(tr, this)
    const dyc = checkBackwardDy(this.input('dy', dy, this.dModel), dy, s.shape, tr.stats)
    const g = this.grads
    const dx = empty([...s.x.shape], { device: this.device })
    const st = tr.stats
    native.moeBackward({
      ...this.args(s.x), dx, dy: dyc,
      dNormW: g['ff_norm.weight'], dProjW: g['ff_proj.weight'], dOutW: g['ff_out.weight'], dRouterW: g['expert_gate.weight'],
      expertsOut: st.experts, weights: st.weights, expertCounts: st.expertCounts, saved: s.t, auxGrad: o.auxGrad ?? 1,
    })
    dyc.dispose()
    if (!o.retain) tr.dispose()
    return this.output(dx, s.shape)
  }
}
