// AdamW with decoupled weight decay, global gradient-norm clipping, the cosine-with-warmup
// learning-rate schedule and SPEC.md's training defaults; trainStep runs one full step in order.
import { native } from '../binding'
import { ErrorCode, VffnError, checkInt, checkNumber, fail, show } from '../errors'
import { adamwStep, gradNorm } from '../lm_ops'
import { Tensor, zeros } from '../tensor'
import type { TransformerLM } from '../nn/model'

export { gumbelTemperature } from '../nn/versatile'

export interface CosineSchedule {
  /** peak learning rate */
  lr: number
  warmupSteps: number
  totalSteps: number
  /** floor as a fraction of the peak. Default 0.1. */
  minRatio?: number
}

/** Linear warmup over warmupSteps to lr, then cosine decay to minRatio·lr at totalSteps (held after). step is 0-based. */
export function cosineLR(step: number, s: CosineSchedule): number {
  checkInt('step', step, 0)
  const floor = (s.minRatio ?? 0.1) * s.lr
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps
  const span = Math.max(1, s.totalSteps - s.warmupSteps)
  const p = Math.min(1, (step - s.warmupSteps) / span)
  return floor + (s.lr - floor) * 0.5 * (1 + Math.cos(Math.PI * p))
}

export interface AdamWOptions {
  lr?: number
  betas?: [number, number]
  eps?: number
  /** decay for parameters whose `decays(name)` is true. Default 0.1. */
  weightDecay?: number
  /** global L2 clip of the gradients (0 disables). Default 1.0. */
  maxGradNorm?: number
  /** which parameters get weight decay; default: all but norm gains */
  decays?: (name: string) => boolean
}

interface Slot {
  param: Tensor
  grad: Tensor
  m: Tensor
  v: Tensor
  decay: boolean
}

export class AdamW {
  lr: number
  readonly betas: [number, number]
  readonly eps: number
  readonly weightDecay: number
  readonly maxGradNorm: number
  /** number of steps taken */
  step = 0
  private readonly slots: [string, Slot][]

  /** params and grads by name (live tensors updated in place), e.g. model.parameters(), model.gradients(). */
  constructor(params: Map<string, Tensor>, grads: Map<string, Tensor>, opts: AdamWOptions = {}) {
    this.lr = checkNumber('lr', opts.lr ?? 1e-3)
    this.betas = opts.betas ?? [0.9, 0.95]
    this.betas.forEach((b, i) => {
      checkNumber(`betas[${i}]`, b)
      if (b < 0 || b >= 1) fail('ERR_ARGUMENT', `betas[${i}]: expected [0, 1), got ${b}`)
    })
    this.eps = checkNumber('eps', opts.eps ?? 1e-8)
    this.weightDecay = checkNumber('weightDecay', opts.weightDecay ?? 0.1)
    this.maxGradNorm = checkNumber('maxGradNorm', opts.maxGradNorm ?? 1.0)
    const decays = opts.decays ?? ((n: string) => !/(^|\.)(attn_norm|ff_norm|ln_f)\.weight$/.test(n))
    // every pair is checked before any moment is allocated, so a bad one strands nothing
    const checked = [...params].map(([name, param]) => {
      const grad = grads.get(name)
      if (!grad) fail('ERR_ARGUMENT', `grads: missing the gradient of ${show(name)}`)
      if (param.dtype !== 'float32') fail('ERR_DTYPE', `${name}: AdamW updates float32 parameters, got ${param.dtype}`)
      if (grad.size !== param.size) fail('ERR_SHAPE', `${name}: gradient shape ${show(grad.shape)} differs from ${show(param.shape)}`)
      return [name, param, grad, decays(name)] as const
    })
    const made: Tensor[] = []
    const moment = (p: Tensor) => {
      const z = zeros(p.shape, { device: p.device })
      made.push(z)
      return z
    }
    try {
      this.slots = checked.map(([name, param, grad, decay]) => [name, { param, grad, m: moment(param), v: moment(param), decay }])
    } catch (e) {
      // out of memory part way: free the moments made so far
      for (const t of made) t.dispose()
      throw e
    }
  }

  /** Whether `name` gets weight decay. */
  decays(name: string): boolean {
    const s = this.slots.find(([n]) => n === name)
    if (!s) fail('ERR_ARGUMENT', `name: no parameter ${show(name)}`)
    return s[1].decay
  }

  /**
   * Clips the gradients to maxGradNorm (globally) and updates every parameter. Returns [2] =
   * (grad norm before clipping, clip coefficient). A non-finite norm skips the update (parameters
   * and moments untouched); the returned norm shows it.
   *
   * The update is all or nothing: every parameter's step reads the global norm, so when any
   * gradient carries a failure (an op that produced it failed) no parameter or moment changes,
   * and `step` goes back to its earlier value as soon as that is known (at the latest when
   * `status` of the step resolves; see {@link trainStep}). Queue the next update after that to
   * keep step counts exact.
   */
  update(lr = this.lr): Tensor {
    return this._update(lr).norm
  }

  /** @internal the update and a promise of its outcome */
  _update(lr = this.lr): { norm: Tensor; status: Promise<StepStatus> } {
    checkNumber('lr', lr)
    const norm = gradNorm(this.slots.map(([, s]) => s.grad), this.maxGradNorm)
    this.step++
    for (const [, s] of this.slots)
      adamwStep(s.param, s.grad, s.m, s.v, {
        lr, beta1: this.betas[0], beta2: this.betas[1], eps: this.eps, weightDecay: s.decay ? this.weightDecay : 0, step: this.step,
      }, norm)
    const status = native.failed(norm).then((f): StepStatus => {
      if (!f) return { ok: true }
      this.step-- // the update changed nothing: it does not count
      return { ok: false, error: new VffnError(f.code as ErrorCode, f.message) }
    }, (e: unknown): StepStatus => {
      this.step-- // the device failed for good before the update could run
      return { ok: false, error: e instanceof VffnError ? e : new VffnError('ERR_INTERNAL', String(e)) }
    })
    return { norm, status }
  }

  dispose(): void {
    for (const [, s] of this.slots) {
      s.m.dispose()
      s.v.dispose()
    }
  }
}

/** The outcome of an optimizer update: applied, or failed with the error of the op that failed first. */
export type StepStatus = { ok: true } | { ok: false; error: VffnError }

export interface TrainStepOptions {
  /** learning-rate schedule; without it the optimizer's lr is used */
  schedule?: CosineSchedule
  noise?: 'gumbel' | 'none'
  ignoreIndex?: number
}

export interface TrainStepResult {
  /** [1] mean cross-entropy */
  loss: Tensor
  /** [2] (gradient norm before clipping, clip coefficient) */
  gradNorm: Tensor
  lr: number
  /** the balance losses of the VersatileFFN layers ([1] each; empty for dense) */
  auxLoss: Tensor[]
  /**
   * Resolves (never rejects) once the step has run: `{ ok: true }`, or `{ ok: false, error }` when
   * an op of the step failed (a token or target id outside the vocabulary, memory, ...): then no
   * parameter, moment or step count changed, and `error` is the original op's error (the same one
   * `loss.data()` rejects with).
   */
  status: Promise<StepStatus>
}

/**
 * One training step in order: zero gradients, forward (the Gumbel temperature follows the
 * optimizer's step), cross-entropy, backward, global clip, AdamW with the scheduled rate. Queues
 * the work and returns at once; await result.loss.data() to read the loss, and result.status to
 * learn whether the step applied. A step with a failed op changes nothing (see AdamW.update).
 */
export function trainStep(model: TransformerLM, opt: AdamW, tokens: Tensor, targets: Tensor, opts: TrainStepOptions = {}): TrainStepResult {
  const step = opt.step
  const lr = opts.schedule ? cosineLR(step, opts.schedule) : opt.lr
  model.zeroGrad()
  const out = model.forward(tokens, { train: true, step, noise: opts.noise ?? 'gumbel' })
  const loss = model.loss(out, targets, opts.ignoreIndex)
  model.backward(out)
  out.logits.dispose()
  for (const s of out.stats) (s as { dispose?: () => void } | undefined)?.dispose?.()
  const { norm, status } = opt._update(lr)
  return { loss, gradNorm: norm, lr, auxLoss: out.auxLoss.filter((a): a is Tensor => a instanceof Tensor), status }
}
