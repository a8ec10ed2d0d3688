// AdamW with decoupled weight decay, global gradient-norm clipping, the cosine-with-warmup
// learning-rate schedule and SPEC.md's training defaults; trainStep runs one full step in order.
import { native } from '../binding'
import { ErrorCode, VffnError, fail, show } from '../errors'
import { adamwStep, axpy, gradNorm } from '../lm_ops'
import { Tensor, tensor, zeros } from '../tensor'
import { LMOutput, TransformerLM } from '../nn/model'
import { checkTensor } from '../ops'
import { Check, INT32, arg, arrayOf, bool, checkOptions, custom, func, instance, int, number, object, oneOf, optional, string } from '../validate'
import { checkNames, loadInto } from '../nn/state'
import { computeCopyOf } from '../nn/precision'

export { gumbelTemperature } from '../nn/versatile'

/** A learning-rate schedule: linear warmup to `lr`, then cosine decay to minRatio·lr (see cosineLR). */
export interface CosineSchedule {
  /** peak learning rate */
  lr: number
  warmupSteps: number
  totalSteps: number
  /** floor as a fraction of the peak. Default 0.1. */
  minRatio?: number
}

const SCHEDULE = object(
  { lr: number({ min: 0 }), warmupSteps: int(0), totalSteps: int(0), minRatio: optional(number({ min: 0, max: 1 })) },
  ['lr', 'warmupSteps', 'totalSteps'],
)

/** Linear warmup over warmupSteps to lr, then cosine decay to minRatio·lr at totalSteps (held after). step is 0-based. */
export function cosineLR(step: number, s: CosineSchedule): number {
  arg('step', step, int(0))
  arg('schedule', s, SCHEDULE)
  const floor = (s.minRatio ?? 0.1) * s.lr
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps
  const span = Math.max(1, s.totalSteps - s.warmupSteps)
  const p = Math.min(1, (step - s.warmupSteps) / span)
  return floor + (s.lr - floor) * 0.5 * (1 + Math.cos(Math.PI * p))
}

/** AdamW's hyperparameters; defaults follow docs/SPEC.md's training defaults (lr 1e-3, betas [0.9, 0.95], eps 1e-8). */
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

const unit = number({ min: 0, exclusiveMax: 1 })
const ADAMW_OPTIONS = {
  lr: optional(number({ min: 0 })),
  betas: optional(custom<[number, number]>('[beta1, beta2], each in [0, 1)', (name, v) => {
    if (!Array.isArray(v) || v.length !== 2) fail('ERR_ARGUMENT', `${name}: expected [beta1, beta2], each in [0, 1), got ${show(v)}`)
    return [unit(`${name}[0]`, v[0]), unit(`${name}[1]`, v[1])]
  })),
  eps: optional(number({ exclusiveMin: 0 })), weightDecay: optional(number({ min: 0 })), maxGradNorm: optional(number({ min: 0 })),
  decays: optional(func as Check<(name: string) => boolean>),
}
// a Map of name -> Tensor (what model.parameters() and model.gradients() return)
const tensorMap = (label: string) => custom<Map<string, Tensor>>(`a Map of ${label} by name`, (name, v) => {
  if (!(v instanceof Map)) fail('ERR_ARGUMENT', `${name}: expected a Map of ${label} by name (e.g. model.parameters()), got ${show(v)}`)
  for (const [k, t] of v) {
    string(`${name} key`, k)
    checkTensor(`${name}.get(${show(k)})`, t)
  }
  return v as Map<string, Tensor>
})

/**
 * AdamW with decoupled weight decay and global gradient-norm clipping over a set of named
 * parameters and their gradients (usually model.parameters() and model.gradients()). Moments are
 * float32 tensors on each parameter's device. update() is all or nothing (see its description).
 */
export class AdamW {
  lr: number
  readonly betas: [number, number]
  readonly eps: number
  readonly weightDecay: number
  readonly maxGradNorm: number
  /** number of steps taken */
  step = 0
  private readonly slots: [string, Slot][]
  // the statuses of updates not yet known to have applied or failed
  private readonly pending = new Set<Promise<StepStatus>>()

  /** params and grads by name (live tensors updated in place), e.g. model.parameters(), model.gradients(). */
  constructor(params: Map<string, Tensor>, grads: Map<string, Tensor>, opts: AdamWOptions = {}) {
    arg('params', params, tensorMap('parameters'))
    arg('grads', grads, tensorMap('gradients'))
    const o = checkOptions('opts', opts, ADAMW_OPTIONS)
    if (params.size === 0) fail('ERR_ARGUMENT', 'params: expected at least one parameter, got an empty Map')
    this.lr = o.lr ?? 1e-3
    this.betas = o.betas ?? [0.9, 0.95]
    this.eps = o.eps ?? 1e-8
    this.weightDecay = o.weightDecay ?? 0.1
    this.maxGradNorm = o.maxGradNorm ?? 1.0
    const decays = o.decays ?? ((n: string) => !/(^|\.)(attn_norm|ff_norm|ln_f)\.weight$/.test(n))
    // every pair is checked (and the user's decays() asked) before any moment buffer is allocated
    for (const [name, param] of params) {
      const grad = grads.get(name)
      if (!grad) fail('ERR_ARGUMENT', `grads: missing the gradient of ${show(name)}`)
      if (param.dtype !== 'float32') fail('ERR_DTYPE', `${name}: AdamW updates float32 parameters, got ${param.dtype}`)
      if (grad.dtype !== 'float32') fail('ERR_DTYPE', `grads.get(${show(name)}): expected float32, got ${grad.dtype}`)
      if (grad.size !== param.size) fail('ERR_SHAPE', `${name}: gradient shape ${show(grad.shape)} differs from ${show(param.shape)}`)
      if (!param.isContiguous || !grad.isContiguous) fail('ERR_ARGUMENT', `${name}: AdamW updates contiguous parameters and gradients`)
      if (String(grad.device) !== String(param.device)) fail('ERR_DEVICE', `grads.get(${show(name)}): expected a tensor on ${param.device}, got one on ${grad.device}`)
    }
    const decay = new Map([...params.keys()].map((n) => [n, decays(n)]))
    const made: Tensor[] = []
    const moment = (p: Tensor) => {
      const z = zeros(p.shape, { device: p.device })
      made.push(z)
      return z
    }
    try {
      this.slots = [...params].map(([name, param]) => [name, { param, grad: grads.get(name)!, m: moment(param), v: moment(param), decay: decay.get(name)! }])
    } catch (e) {
      // out of memory part way: free the moments made so far
      for (const t of made) t.dispose()
      throw e
    }
  }

  /** Whether `name` gets weight decay. */
  decays(name: string): boolean {
    arg('name', name, string)
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
    arg('lr', lr, number({ min: 0 }))
    const norm = gradNorm(this.slots.map(([, s]) => s.grad), this.maxGradNorm)
    this.step++
    // a bf16-mixed parameter's compute copy is rewritten in the same gated pass as its master
    for (const [, s] of this.slots)
      adamwStep(s.param, s.grad, s.m, s.v, {
        lr, beta1: this.betas[0], beta2: this.betas[1], eps: this.eps, weightDecay: s.decay ? this.weightDecay : 0, step: this.step,
      }, norm, computeCopyOf(s.param))
    const status: Promise<StepStatus> = native.failed(norm._id).then((f): StepStatus => {
      if (!f) return { ok: true }
      this.step-- // the update changed nothing: it does not count
      return { ok: false, error: new VffnError(f.code as ErrorCode, f.message) }
    }, (e: unknown): StepStatus => {
      this.step-- // the device failed for good before the update could run
      return { ok: false, error: e instanceof VffnError ? e : new VffnError('ERR_INTERNAL', String(e)) }
    })
    this.pending.add(status)
    void status.then(() => this.pending.delete(status))
    return { norm, status }
  }

  /**
   * The training state: step count, hyperparameters, which parameters decay, and the moments
   * by parameter name (the live tensors: read or clone them before the next update to keep a
   * snapshot). {@link loadStateDict} takes it back; a checkpoint stores it (saveCheckpoint).
   */
  stateDict(): AdamWState {
    const m: Record<string, Tensor> = {}
    const v: Record<string, Tensor> = {}
    for (const [n, s] of this.slots) {
      m[n] = s.m
      v[n] = s.v
    }
    return {
      step: this.step, lr: this.lr, betas: [...this.betas], eps: this.eps, weightDecay: this.weightDecay, maxGradNorm: this.maxGradNorm,
      decays: this.slots.filter(([, s]) => s.decay).map(([n]) => n), m, v,
    }
  }

  /**
   * Restores a state from {@link stateDict} (moments as float32 Tensors on this device or
   * Float32Arrays). All or nothing: the parameter names (exactly this optimizer's), every
   * moment's shape, dtype and device, and the hyperparameters (betas, eps, weightDecay,
   * maxGradNorm and the decayed names must equal this optimizer's) are checked first; on any
   * mismatch it throws a VffnError and nothing changes. Sets step and lr, and copies the moments.
   */
  loadStateDict(state: AdamWState): void {
    const st = this._checkState(state, 'state')
    const dev = this.slots[0][1].param.device
    loadInto('state.m', this.slots.map(([n, s]) => [n, s.m]), st.m, dev)
    loadInto('state.v', this.slots.map(([n, s]) => [n, s.v]), st.v, dev)
    this.step = st.step
    this.lr = st.lr
  }

  /** @internal checks a state against this optimizer (see loadStateDict) without changing anything; `label` names it in errors */
  _checkState(state: AdamWState, label: string): AdamWState {
    const st = arg(label, state, ADAMW_STATE) as AdamWState
    const names = this.slots.map(([n]) => n)
    const want: [string, readonly number[]][] = this.slots.map(([n, s]) => [n, s.param.shape])
    const mine: Record<string, unknown> = { betas: this.betas, eps: this.eps, weightDecay: this.weightDecay, maxGradNorm: this.maxGradNorm }
    for (const k of ['betas', 'eps', 'weightDecay', 'maxGradNorm'] as const)
      if (show(st[k]) !== show(mine[k]))
        fail('ERR_ARGUMENT', `${label}.${k}: the state was saved with ${k} ${show(st[k])}, this optimizer has ${show(mine[k])}; build the optimizer with the saved hyperparameters`)
    const decayed = names.filter((n) => this.slots.find(([k]) => k === n)![1].decay)
    const unknownDecay = st.decays.filter((n) => !names.includes(n))
    if (unknownDecay.length || show([...st.decays].sort()) !== show([...decayed].sort()))
      fail('ERR_ARGUMENT', `${label}.decays: the state decays ${show(st.decays.length)} parameters${unknownDecay.length ? ` (unknown: ${unknownDecay.map(show).join(', ')})` : ''}, this optimizer decays ${decayed.length} others; build it with the same decays()`)
    for (const which of ['m', 'v'] as const) {
      checkNames(`${label}.${which}`, want, Object.keys(st[which]), true, 'moment')
      for (const [n, s] of this.slots) {
        const x = st[which][n]
        const where = `${label}.${which}.${n}`
        if (x instanceof Float32Array) {
          if (x.length !== s.param.size) fail('ERR_SHAPE', `${where}: expected ${s.param.size} values (shape ${show(s.param.shape)}), got ${x.length}`)
        } else if (x instanceof Tensor) {
          x._check(where)
          if (x.dtype !== 'float32') fail('ERR_DTYPE', `${where}: moments are float32, got ${x.dtype}`)
          if (x.shape.join() !== s.param.shape.join()) fail('ERR_SHAPE', `${where}: expected shape ${show(s.param.shape)}, got ${show(x.shape)}`)
          if (String(x.device) !== String(s.param.device)) fail('ERR_DEVICE', `${where}: expected a tensor on ${s.param.device}, got one on ${x.device}`)
        } else fail('ERR_ARGUMENT', `${where}: expected a Tensor or Float32Array, got ${show(x)}`)
      }
    }
    return st
  }

  /** @internal resolves to the step count as of the updates queued so far, once those still pending have applied or failed */
  _settledStep(): Promise<number> {
    const step = this.step
    return Promise.all([...this.pending]).then((sts) => step - sts.filter((x) => !x.ok).length)
  }

  /** @internal whether this optimizer updates exactly these parameters (the same tensors under the same names) */
  _updates(params: Map<string, Tensor>): boolean {
    return this.slots.length === params.size && this.slots.every(([n, s]) => params.get(n) === s.param)
  }

  /** Frees the moments; the optimizer is unusable afterwards. */
  dispose(): void {
    for (const [, s] of this.slots) {
      s.m.dispose()
      s.v.dispose()
    }
  }
}

/** AdamW's training state (see AdamW.stateDict): what a resumed run needs besides the weights. */
export interface AdamWState {
  /** steps taken (drives bias correction, the schedule and the Gumbel temperature) */
  step: number
  lr: number
  betas: [number, number]
  eps: number
  weightDecay: number
  maxGradNorm: number
  /** the names of the parameters that get weight decay */
  decays: string[]
  /** first moments by parameter name */
  m: Record<string, Tensor | Float32Array>
  /** second moments by parameter name */
  v: Record<string, Tensor | Float32Array>
}

const momentRecord = custom<Record<string, unknown>>('an object of moments by parameter name', (name, v) => {
  if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Map) fail('ERR_ARGUMENT', `${name}: expected an object of moments by parameter name, got ${show(v)}`)
  return v as Record<string, unknown>
})
const ADAMW_STATE = object({
  step: int(0), lr: number({ min: 0 }), betas: ADAMW_OPTIONS.betas, eps: number({ exclusiveMin: 0 }), weightDecay: number({ min: 0 }),
  maxGradNorm: number({ min: 0 }), decays: arrayOf(string), m: momentRecord, v: momentRecord,
}, ['step', 'lr', 'betas', 'eps', 'weightDecay', 'maxGradNorm', 'decays', 'm', 'v'])

/** The outcome of an optimizer update: applied, or failed with the error of the op that failed first. */
export type StepStatus = { ok: true } | { ok: false; error: VffnError }

/** Options of one trainStep. */
export interface TrainStepOptions {
  /** learning-rate schedule; without it the optimizer's lr is used */
  schedule?: CosineSchedule
  noise?: 'gumbel' | 'none'
  ignoreIndex?: number
  /**
   * Micro-batches per step (default 1): the batch's B sequences split into `accumulate` equal
   * parts (it must divide B), whose gradients add up to the full batch's mean before one clip and
   * update. With more than one, `targets` must be an Int32Array (see {@link trainStep}).
   */
  accumulate?: number
  /**
   * The Gumbel temperature τ of this step's VersatileFFN layers (> 0); default
   * gumbelTemperature(opt.step), the paper's per-step schedule. stretchedTemperature(opt.step, N)
   * stretches that schedule over an N-step run.
   */
  temperature?: number
  /**
   * Keep the FFN statistics (loop counts, routing) of every micro-batch and return them in
   * `stats` instead of freeing them; the caller disposes them. Default false.
   */
  stats?: boolean
}

/** What trainStep queued: its loss and gradient norm (tensors to read), the rate used, the balance losses, and its status. */
export interface TrainStepResult {
  /** [1] mean cross-entropy over the counted targets of the whole batch */
  loss: Tensor
  /** [2] (gradient norm before clipping, clip coefficient) */
  gradNorm: Tensor
  lr: number
  /** the balance losses of the VersatileFFN layers ([1] each, the mean over micro-batches; empty for dense) */
  auxLoss: Tensor[]
  /**
   * Resolves (never rejects) once the step has run: `{ ok: true }`, or `{ ok: false, error }` when
   * an op of the step failed (a token or target id outside the vocabulary, memory, ...): then no
   * parameter, moment or step count changed, and `error` is the original op's error (the same one
   * `loss.data()` rejects with).
   */
  status: Promise<StepStatus>
  /** with `stats: true`: per micro-batch, each layer's statistics (undefined for a dense layer); dispose them */
  stats?: LMOutput['stats'][]
}

const TRAIN_STEP_OPTIONS = {
  schedule: optional(SCHEDULE), noise: optional(oneOf(['gumbel', 'none'] as const)), ignoreIndex: optional(INT32), accumulate: optional(int(1)), temperature: optional(number({ exclusiveMin: 0 })),
  stats: optional(bool),
}

/**
 * One training step in order: zero gradients, forward (the Gumbel temperature follows the
 * optimizer's step), cross-entropy, backward, global clip, AdamW with the scheduled rate. Queues
 * the work and returns at once; await result.loss.data() to read the loss, and result.status to
 * learn whether the step applied. A step with a failed op changes nothing (see AdamW.update).
 *
 * `targets` is an int32 Tensor [B, S] or the same values as an Int32Array (row-major, B·S long;
 * uploaded to the tokens' device). With `accumulate: n` micro-batch m holds sequences
 * [m·B/n, (m+1)·B/n); its loss gradient is weighted by its share c_m/C of the counted targets
 * (those not equal to ignoreIndex), so the accumulated gradient is the full batch's mean. The
 * counts come from the host values, which is why accumulation takes targets as an Int32Array:
 * counting a device tensor would have to wait for it. What differs from one big batch: each
 * micro-batch draws its own Gumbel noise (equal in distribution, not in value; with noise 'none'
 * the step equals the unsplit one up to float reassociation), and the balance loss is the mean of
 * the micro-batches' own balance losses (its f and P are statistics of the tokens routed
 * together). Every micro-batch is queued by this call, so memory holds all their activations
 * until they have run: accumulation here fixes the math of a large batch, not its peak memory.
 */
export function trainStep(model: TransformerLM, opt: AdamW, tokens: Tensor, targets: Tensor | Int32Array, opts: TrainStepOptions = {}): TrainStepResult {
  // every argument is checked before any work is queued
  arg('model', model, instance(TransformerLM))
  arg('opt', opt, instance(AdamW))
  if (!opt._updates(model.parameters())) fail('ERR_ARGUMENT', "opt: this optimizer updates another model's parameters; build it from model.parameters()")
  const o = checkOptions('opts', opts, TRAIN_STEP_OPTIONS)
  checkTensor('tokens', tokens, { ndim: 2, dtypes: ['int32'] })
  const [B, S] = tokens.shape
  const n = o.accumulate ?? 1
  if (B % n !== 0) fail('ERR_ARGUMENT', `accumulate: expected a divisor of the batch size ${B}, got ${n}`)
  if (targets instanceof Int32Array) {
    if (targets.length !== B * S) fail('ERR_SHAPE', `targets: expected ${B * S} values (the shape of tokens ${show(tokens.shape)}), got ${targets.length}`)
  } else {
    checkTensor('targets', targets, { ndim: 2, dtypes: ['int32'] })
    if (targets.shape.join() !== tokens.shape.join()) fail('ERR_SHAPE', `targets: expected ${show(tokens.shape)} (the shape of tokens), got ${show(targets.shape)}`)
    if (String(targets.device) !== String(tokens.device)) fail('ERR_DEVICE', `targets: expected a tensor on ${tokens.device}, got one on ${targets.device}`)
    if (n > 1) fail('ERR_ARGUMENT', 'targets: accumulate > 1 needs the targets as an Int32Array, to weight each micro-batch by its counted targets without waiting for the device')
  }
  const step = opt.step
  const lr = opts.schedule ? cosineLR(step, opts.schedule) : opt.lr
  const ignoreIndex = o.ignoreIndex ?? -100
  const noise = o.noise ?? 'gumbel'
  const tauOpt = o.temperature !== undefined ? { tau: o.temperature } : {}
  const kept: LMOutput['stats'][] | undefined = o.stats ? [] : undefined
  const tg = targets instanceof Int32Array ? tensor(targets, [B, S], { dtype: 'int32', device: tokens.device }) : targets
  try {
    model.zeroGrad()
    if (n === 1) {
      const out = model.forward(tokens, { train: true, step, noise, ...tauOpt })
      const loss = model.loss(out, tg, ignoreIndex)
      model.backward(out)
      const auxLoss = finishOutput(out, kept)
      const { norm, status } = opt._update(lr)
      return { loss, gradNorm: norm, lr, auxLoss, status, ...(kept ? { stats: kept } : {}) }
    }
    // counted targets per micro-batch, from the host values
    const rows = B / n
    const counts = Array.from({ length: n }, (_, m) => {
      let c = 0
      for (let i = m * rows * S; i < (m + 1) * rows * S; i++) if ((targets as Int32Array)[i] !== ignoreIndex) c++
      return c
    })
    const total = counts.reduce((a, b) => a + b, 0)
    const loss = zeros([1], { device: tokens.device })
    let auxLoss: Tensor[] = []
    for (let m = 0; m < n; m++) {
      const x = tokens.rows(m * rows, (m + 1) * rows)
      const y = tg.rows(m * rows, (m + 1) * rows)
      const share = total > 0 ? counts[m] / total : 0
      const out = model.forward(x, { train: true, step, noise, noiseStream: m, ...tauOpt })
      const lm = model.loss(out, y, ignoreIndex)
      model.backward(out, share, { auxGrad: 1 / n })
      const aux = finishOutput(out, kept)
      if (m === 0) auxLoss = aux.map((a) => zeros(a.shape, { device: a.device }))
      // the full-batch mean: each micro-batch's mean weighted by its share of counted targets
      axpy(loss, lm, share)
      aux.forEach((a, i) => axpy(auxLoss[i], a, 1 / n))
      for (const t of [x, y, lm, ...aux]) t.dispose()
    }
    const { norm, status } = opt._update(lr)
    return { loss, gradNorm: norm, lr, auxLoss, status, ...(kept ? { stats: kept } : {}) }
  } finally {
    if (tg !== targets) tg.dispose()
  }
}

// frees what a training output still holds after backward (its stats go to `keep` when given); returns its balance losses
function finishOutput(out: LMOutput, keep?: LMOutput['stats'][]): Tensor[] {
  out.logits.dispose()
  if (keep) keep.push(out.stats)
  else for (const s of out.stats) (s as { dispose?: () => void } | undefined)?.dispose?.()
  return out.auxLoss.filter((a): a is Tensor => a instanceof Tensor)
}
