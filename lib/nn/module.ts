// Parameter and gradient handling shared by the FFN modules: named parameters in docs/SPEC.md's names,
// float32 gradients accumulated by backward, state dicts that validate fully before changing anything.
import { Device, DeviceLike } from '../device'
import { fail, show } from '../errors'
import { DType, FloatDType, Tensor, checkDType, randn, zeros } from '../tensor'
import { arg, device, dtype, int, optional } from '../validate'
import { LoadOptions, LoadResult, checkNames, loadInto, strictOf } from './state'
import { PRECISION, Precision, disposeComputeCopy, makeComputeCopy, refreshComputeCopies } from './precision'

/** Options every module takes: where its parameters live, their dtype, and the seed of their init. */
export interface ModuleOptions {
  device?: DeviceLike
  /** Weight dtype: 'float32' (default) or 'bfloat16'. Activations and gradients are float32. */
  dtype?: FloatDType
  /** Seed of the initial weights (and the default Gumbel noise seed). Default 0. */
  seed?: number
  /**
   * 'float32' (default) or 'bf16-mixed': float32 parameters (the master copy, what the optimizer
   * and checkpoints see) with bfloat16 copies of the FFN matrices that forward and backward read,
   * refreshed by every AdamW update; needs dtype 'float32'.
   */
  precision?: Precision
}

/** A parameter: its shape, and `normal` (std 0.02 truncated at 3σ) or `ones` (norm gains). */
export interface ParamSpec {
  name: string
  shape: number[]
  init: 'normal' | 'ones'
  /** under bf16-mixed, forward and backward read a bfloat16 copy (the FFN matrices; norms and routing heads stay float32) */
  bf16?: boolean
}

/** The option checks every module shares (see lib/validate.ts). */
export const MODULE_OPTIONS = { device: optional(device), dtype: optional(dtype<DType>(['float32', 'bfloat16'])), seed: optional(int(0)), precision: optional(PRECISION) }

/** @internal bf16-mixed keeps float32 masters: a bfloat16 parameter dtype has none */
export function checkPrecision(precision: Precision | undefined, dtype: string | undefined): Precision {
  const p = precision ?? 'float32'
  if (p === 'bf16-mixed' && dtype === 'bfloat16')
    fail('ERR_ARGUMENT', "precision: 'bf16-mixed' keeps float32 master weights; use it with dtype 'float32' (the default), not 'bfloat16'")
  return p
}

export const INIT_STD = 0.02

/** 'cuda' and 'cuda:0' are one device */
export const sameDevice = (a: Device, b: Device): boolean => a.type === b.type && a.index === b.index
const MASK64 = (1n << 64n) - 1n

/** Base of DenseFFN and VersatileFFN: parameters, gradients, state dicts. */
export class Module {
  readonly device: Device
  /** Weight dtype. */
  readonly dtype: FloatDType
  /** Seed of the initial weights. */
  readonly seed: number
  /** Training precision ('float32' or 'bf16-mixed'). */
  readonly precision: Precision
  /** Parameters by docs/SPEC.md name. */
  readonly params: Record<string, Tensor> = {}
  /** @internal the dtype of the saved SwiGLU pre-activations: bfloat16 under bf16-mixed */
  protected get _savedDType(): FloatDType {
    return this.precision === 'bf16-mixed' ? 'bfloat16' : 'float32'
  }
  /** @internal what forward and backward read: the bfloat16 copy under bf16-mixed, else the parameter */
  protected readonly weights: Record<string, Tensor> = {}
  private readonly specs: ParamSpec[]
  private _grads: Record<string, Tensor> | undefined

  /**
   * float32 gradients by parameter name; backward accumulates into them, zeroGrad() clears.
   * Allocated (as zeros) on first use, so a module used only for inference holds no gradient memory.
   */
  get grads(): Record<string, Tensor> {
    if (!this._grads) {
      const g: Record<string, Tensor> = {}
      for (const s of this.specs) g[s.name] = zeros(s.shape, { device: this.device })
      this._grads = g
    }
    return this._grads
  }

  protected constructor(specs: ParamSpec[], opts: ModuleOptions) {
    this.device = Device.get(opts.device)
    this.dtype = checkDType('dtype', opts.dtype ?? 'float32', ['float32', 'bfloat16']) as FloatDType
    this.seed = arg('seed', opts.seed ?? 0, int())
    this.precision = checkPrecision(opts.precision, this.dtype)
    this.specs = specs
    try {
      specs.forEach((s, i) => {
        // each parameter draws from its own Philox stream: (seed << 8 | index)
        const seed = ((BigInt(this.seed) << 8n) | BigInt(i)) & MASK64
        const p = (this.params[s.name] =
          s.init === 'ones'
            ? zeros(s.shape, { device: this.device, dtype: this.dtype }).fill_(1)
            : randn(s.shape, { seed, std: INIT_STD, truncate: 3, device: this.device, dtype: this.dtype }))
        this.weights[s.name] = this.precision === 'bf16-mixed' && s.bf16 ? makeComputeCopy(p) : p
      })
    } catch (e) {
      // a failed allocation (out of memory) must not strand the parameters made before it
      for (const t of Object.values(this.params)) {
        disposeComputeCopy(t)
        t.dispose()
      }
      throw e
    }
  }

  /** The parameter tensors, in docs/SPEC.md's order. */
  parameters(): Tensor[] {
    return this.specs.map((s) => this.params[s.name])
  }

  /** [name, parameter] pairs, in docs/SPEC.md's order. */
  namedParameters(): [string, Tensor][] {
    return this.specs.map((s) => [s.name, this.params[s.name]])
  }

  /** Sets every gradient to zero. */
  zeroGrad(): void {
    if (!this._grads) return
    // check all first: a disposed gradient must not leave the others half cleared
    for (const [n, g] of Object.entries(this._grads)) g._check(`grads.${n}`)
    for (const g of Object.values(this._grads)) g.fill_(0)
  }

  /** The parameters by name (the live tensors, not copies). */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries(this.namedParameters())
  }

  /**
   * Copies values into the parameters. Every name must be present with its exact shape, as a
   * float32/bfloat16 Tensor on this module's device or a Float32Array. Errors name every missing
   * and unexpected name (ERR_ARGUMENT) or the bad entry (ERR_SHAPE, ERR_DTYPE, ERR_DEVICE,
   * ERR_DISPOSED); on error nothing changes. `strict: false` skips names the module lacks and
   * returns them in `ignored`.
   */
  loadStateDict(sd: Record<string, Tensor | Float32Array>, opts: LoadOptions = {}): LoadResult {
    if (typeof sd !== 'object' || sd === null) fail('ERR_ARGUMENT', `stateDict: expected an object, got ${show(sd)}`)
    const strict = strictOf(opts)
    const ignored = checkNames('stateDict', this.specs.map((s) => [s.name, s.shape]), Object.keys(sd), strict)
    loadInto('stateDict', this.namedParameters(), sd, this.device)
    refreshComputeCopies(this.parameters())
    return { ignored }
  }

  /** Frees parameters, their bfloat16 compute copies and gradients. */
  dispose(): void {
    for (const t of Object.values(this.params)) disposeComputeCopy(t)
    for (const t of [...Object.values(this.params), ...Object.values(this._grads ?? {})]) t.dispose()
  }

  /**
   * @internal checks an activation [..., width] (leading sizes >= 1): float32 on this device;
   * returns a contiguous [T, width] handle, T the product of the leading sizes
   */
  protected input(name: string, x: unknown, width: number): Tensor {
    if (!(x instanceof Tensor)) fail('ERR_ARGUMENT', `${name}: expected a Tensor, got ${show(x)}`)
    x._check(name)
    if (x.ndim < 2 || x.shape[x.ndim - 1] !== width || x.shape.slice(0, -1).some((s) => s < 1))
      fail('ERR_SHAPE', `${name}: expected shape [..., ${width}] with every leading size >= 1, got ${show(x.shape)}`)
    if (x.dtype !== 'float32') fail('ERR_DTYPE', `${name}: expected float32, got ${x.dtype}`)
    if (!sameDevice(x.device, this.device)) fail('ERR_DEVICE', `${name}: expected a tensor on ${this.device}, got one on ${x.device}`)
    const c = x.contiguous()
    if (x.ndim === 2) return c
    const flat = c.reshape([c.size / width, width])
    c.dispose()
    return flat
  }

  /** @internal gives a [T, width] result the caller's leading shape (a view; drops the flat handle) */
  protected output<E extends DType>(t: Tensor<E>, shape: readonly number[]): Tensor<E> {
    if (shape.length === 2) return t
    const r = t.reshape(shape)
    t.dispose()
    return r
  }
}
