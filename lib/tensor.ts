import { inspect } from 'node:util'
import { native } from './binding'
import { Device, DeviceLike } from './device'
import { fail, show } from './errors'
import { INT32, arg, checkOptions, device, dtype as dtypeOf, instance, number, optional, seed64 } from './validate'

/** Element types: float32, bfloat16 (stored as 16 bits, read back as float32) and int32 (token ids). */
export type DType = 'float32' | 'bfloat16' | 'int32'
/** The floating-point dtypes. */
export type FloatDType = 'float32' | 'bfloat16'
/**
 * What `data()` resolves with for a tensor of dtype D: Int32Array for int32, Float32Array for the
 * float dtypes, and the union when the dtype is not known statically.
 */
export type TensorValues<D extends DType> = [D] extends ['int32'] ? Int32Array : [D] extends [FloatDType] ? Float32Array : Float32Array | Int32Array
// the native dtype code (native/core/dtype.h); compares, not a keyed lookup: it runs for every new tensor
const dtypeCode = (d: DType): number => (d === 'float32' ? 0 : d === 'bfloat16' ? 1 : 2)
const MAX_DIMS = 6
/** Most elements one tensor may hold (2^50: its bytes stay exact doubles and within what the allocator takes). */
export const MAX_ELEMENTS = 2 ** 50

/** Where a new tensor lives and its element type. */
export interface TensorOptions {
  /** element type; default float32 (int32 for Int32Array data) */
  dtype?: DType
  /** default 'cpu' */
  device?: DeviceLike
}

/** @internal checks a dtype argument */
export function checkDType(name: string, d: unknown, allowed: readonly DType[] = ['float32', 'bfloat16', 'int32']): DType {
  if (typeof d !== 'string' || !(allowed as readonly string[]).includes(d))
    fail('ERR_DTYPE', `${name}: expected ${allowed.map((a) => `'${a}'`).join(' or ')}, got ${show(d)}`)
  return d as DType
}

/** @internal checks a shape argument */
export function checkShape(name: string, shape: unknown): number[] {
  if (!Array.isArray(shape) || shape.length > MAX_DIMS)
    fail('ERR_SHAPE', `${name}: expected an array of at most ${MAX_DIMS} sizes, got ${show(shape)}`)
  for (const s of shape)
    if (typeof s !== 'number' || !Number.isInteger(s) || s < 0)
      fail('ERR_SHAPE', `${name}: sizes must be non-negative integers, got ${show(shape)}`)
  const n = numelOf(shape as number[])
  if (n > MAX_ELEMENTS)
    fail('ERR_SHAPE', `${name}: ${show(shape)} holds ${n} elements, too many (a tensor holds at most 2^50)`)
  return [...(shape as number[])]
}

function contiguousStrides(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length)
  let s = 1
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s
    s *= shape[i]
  }
  return st
}

const numelOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

// releases the native handle of a Tensor that was collected without dispose() (the handle's
// memory then lives on until this runs, on a later turn of the event loop)
const HANDLES = new FinalizationRegistry<number>((id) => {
  native.release(id)
})

/**
 * An n-dimensional array on a device. Ops on tensors are queued on the device's stream and
 * return at once; `await t.data()` waits for the values. Views (rows, cols, slice, reshape, T)
 * share memory with their source; each tensor holds its own reference, so disposing one never
 * invalidates another, and memory is freed once nothing (no tensor, no queued op) holds it.
 *
 * The type parameter is the dtype when it is known statically (`tensor(new Int32Array(...))` is a
 * `Tensor<'int32'>`), so `data()` resolves with the matching typed array; a plain `Tensor` has
 * any dtype.
 */
export class Tensor<D extends DType = DType> {
  /** @internal native handle id (native/napi/storage.h): what ops pass to the addon */
  readonly _id: number
  /** @internal native dtype code */
  readonly _dt: number
  /** Size of each dimension. */
  readonly shape: readonly number[]
  /** Distance between neighbours along each dimension, in elements (views may be non-contiguous). */
  readonly strides: readonly number[]
  /** Offset of element [0, ..., 0] in its storage, in elements. */
  readonly offset: number
  /** Element type. */
  readonly dtype: D
  /** The device whose memory holds the values. */
  readonly device: Device
  // false once dispose() released the handle (a private field: the object itself is frozen)
  #live = true

  /**
   * @internal use tensor(), zeros(), randn() or empty(). `id` names a native handle whose view
   * (checked there once, when it was made) is exactly this dtype, offset, shape and strides; the
   * Tensor owns it: dispose() or garbage collection releases it. shape and strides are frozen and
   * kept, not copied: pass arrays nobody else changes (new ones, or another tensor's).
   */
  constructor(id: number, dtype: D, device: Device, shape: readonly number[], strides: readonly number[], offset: number) {
    this._id = id
    this.dtype = dtype
    this._dt = dtypeCode(dtype)
    this.device = device
    this.shape = Object.freeze(shape)
    this.strides = Object.freeze(strides)
    this.offset = offset
    HANDLES.register(this, id, this)
    // what native code reads (dtype, shape, strides, offset) can't be changed afterwards
    Object.freeze(this)
  }

  /** @internal allocates an uninitialised contiguous tensor */
  static _alloc<E extends DType>(shape: readonly number[], dtype: E, device: Device): Tensor<E> {
    const id = native.empty(device.code, device.index, dtypeCode(dtype), shape)
    return new Tensor<E>(id, dtype, device, shape, contiguousStrides(shape), 0)
  }

  /** @internal a view of this tensor's memory: a new handle, checked once against the memory */
  _view(shape: readonly number[], strides: readonly number[], offset: number): Tensor<D> {
    const id = native.view(this._id, this._dt, offset, shape, strides)
    return new Tensor(id, this.dtype, this.device, shape, strides, offset)
  }

  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length
  }
  /** Number of elements. */
  get size(): number {
    return numelOf(this.shape)
  }
  /** True once dispose() has dropped this tensor's memory. */
  get disposed(): boolean {
    return !this.#live
  }
  /** True when the elements lie in row-major order without gaps. */
  get isContiguous(): boolean {
    let s = 1
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== s) return false
      s *= this.shape[i]
    }
    return true
  }

  /** @internal throws ERR_DISPOSED naming the argument */
  _check(name = 'tensor'): this {
    if (!this.#live) fail('ERR_DISPOSED', `${name}: tensor has been disposed`)
    return this
  }

  /**
   * Resolves with the values in row-major order: an Int32Array for int32, else a Float32Array
   * (bfloat16 widened). Typed by the dtype when it is known; see also floatData() and intData().
   */
  data(): Promise<TensorValues<D>> {
    this._check()
    return native.read(this._id) as Promise<TensorValues<D>>
  }
  /** Resolves with float values (float32, or bfloat16 widened); ERR_DTYPE for an int32 tensor. */
  async floatData(): Promise<Float32Array> {
    this._check()
    if (this.dtype === 'int32') fail('ERR_DTYPE', 'tensor: floatData() needs a float32 or bfloat16 tensor, got int32')
    return native.read(this._id) as Promise<Float32Array>
  }
  /** Resolves with int32 values; only for int32 tensors. */
  async intData(): Promise<Int32Array> {
    this._check()
    if (this.dtype !== 'int32') fail('ERR_DTYPE', `tensor: intData() needs an int32 tensor, got ${this.dtype}`)
    return native.read(this._id) as Promise<Int32Array>
  }
  /** Resolves with the raw bfloat16 bits (for checkpoints); only for bfloat16 tensors. */
  async rawData(): Promise<Uint16Array> {
    this._check()
    if (this.dtype !== 'bfloat16') fail('ERR_DTYPE', `tensor: rawData() needs a bfloat16 tensor, got ${this.dtype}`)
    return native.read(this._id, true) as Promise<Uint16Array>
  }

  /** A new contiguous tensor with this one's values on `device`, converted to `dtype` if given. */
  to(device: DeviceLike): Tensor<D>
  to<E extends DType>(device: DeviceLike, dtype: E): Tensor<E>
  to(device: DeviceLike, dtype: DType = this.dtype): Tensor {
    this._check()
    const dev = Device.get(device)
    checkDType('dtype', dtype)
    if ((dtype === 'int32') !== (this.dtype === 'int32'))
      fail('ERR_DTYPE', `dtype: int32 converts only to int32, got ${this.dtype} -> ${dtype}`)
    const out = Tensor._alloc(this.shape, dtype, dev)
    native.copy(out._id, this._id)
    return out
  }
  /** A new tensor converted to `dtype` on the same device (bfloat16 rounds to nearest even). */
  astype<E extends DType>(dtype: E): Tensor<E> {
    return this.to(this.device, dtype)
  }
  /** A copy with its own memory. */
  clone(): Tensor<D> {
    return this.to(this.device)
  }
  /** This tensor if contiguous (as a new handle on the same memory), else a contiguous copy. */
  contiguous(): Tensor<D> {
    this._check()
    if (!this.isContiguous) return this.clone()
    return this._view(this.shape, this.strides, this.offset)
  }

  /** A view of indices [start, end) along `dim`; no copy. */
  slice(dim: number, start: number, end: number = this.shape[dim]): Tensor<D> {
    this._check()
    if (!Number.isInteger(dim) || dim < 0 || dim >= this.ndim)
      fail('ERR_ARGUMENT', `dim: expected 0..${this.ndim - 1}, got ${show(dim)}`)
    const n = this.shape[dim]
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > n || start > end)
      fail('ERR_ARGUMENT', `slice: expected 0 <= start <= end <= ${n} along dim ${dim}, got [${show(start)}, ${show(end)})`)
    const shape = [...this.shape]
    shape[dim] = end - start
    return this._view(shape, this.strides, this.offset + start * this.strides[dim])
  }
  /** Rows [start, end) of the first dimension; no copy. */
  rows(start: number, end?: number): Tensor<D> {
    return this.slice(0, start, end)
  }
  /** Columns [start, end) of the last dimension; no copy. */
  cols(start: number, end?: number): Tensor<D> {
    return this.slice(this.ndim - 1, start, end)
  }
  /** The same elements in another shape (one size may be -1); a view when contiguous, else a copy. */
  reshape(shape: readonly number[]): Tensor<D> {
    this._check()
    if (!Array.isArray(shape) || shape.length > MAX_DIMS || shape.some((d) => !Number.isInteger(d) || d < -1) || shape.filter((d) => d === -1).length > 1)
      fail('ERR_SHAPE', `shape: expected an array of at most ${MAX_DIMS} non-negative integer sizes (one may be -1), got ${show(shape)}`)
    const s = [...shape]
    const free = s.indexOf(-1)
    if (free >= 0) {
      const rest = numelOf(s.filter((_, i) => i !== free))
      if (rest === 0 || this.size % rest !== 0) fail('ERR_SHAPE', `shape: cannot reshape ${show(this.shape)} into ${show(shape)}`)
      s[free] = this.size / rest
    }
    checkShape('shape', s)
    if (numelOf(s) !== this.size) fail('ERR_SHAPE', `shape: cannot reshape ${show(this.shape)} (${this.size} elements) into ${show(shape)}`)
    if (this.isContiguous) return this._view(s, contiguousStrides(s), this.offset)
    const src = this.clone()
    const out = src._view(s, contiguousStrides(s), src.offset)
    src.dispose()
    return out
  }
  /** The transpose of a 2-D tensor as a view (matmul reads it without copying). */
  get T(): Tensor<D> {
    this._check()
    if (this.ndim !== 2) fail('ERR_SHAPE', `tensor: T needs a 2-D tensor, got ${this.ndim} dimensions`)
    return this._view([this.shape[1], this.shape[0]], [this.strides[1], this.strides[0]], this.offset)
  }

  /** Fills in place with a value (queued). Returns this. */
  fill_(value: number): this {
    this._check()
    checkFillValue(value, this.dtype)
    native.fill(this._id, value)
    return this
  }
  /** Copies `src` (same number of elements, any device or float dtype) into this tensor, in place. */
  copy_(src: Tensor): this {
    this._check('dst')
    arg('src', src, instance(Tensor))._check('src')
    if (src.size !== this.size) fail('ERR_SHAPE', `src: expected ${this.size} elements ${show(this.shape)}, got ${src.size} ${show(src.shape)}`)
    if ((src.dtype === 'int32') !== (this.dtype === 'int32')) fail('ERR_DTYPE', `src: cannot copy ${src.dtype} into ${this.dtype}`)
    native.copy(this._id, src._id)
    return this
  }

  /** Drops this tensor's reference to its memory. Using it afterwards throws ERR_DISPOSED. */
  dispose(): void {
    if (!this.#live) return
    this.#live = false
    HANDLES.unregister(this)
    native.release(this._id)
  }

  /**
   * What console.log and util.inspect show: `Tensor(float32 [2, 3] cpu)`, with ", disposed" once
   * disposed. The values need a wait, so they are not shown: `await t.data()` reads them.
   */
  [inspect.custom](): string {
    return `Tensor(${this.dtype} ${show(this.shape)} ${this.device}${this.disposed ? ', disposed' : ''})`
  }

  /** `Tensor([2, 3], float32, cpu)`. */
  toString(): string {
    return `Tensor(${show(this.shape)}, ${this.dtype}, ${this.device})`
  }
}

/** Values as a (nested) array of numbers: `[[1, 2], [3, 4]]`. */
export type Nested = number | Nested[]

function flatten(data: Nested[], shape: number[], depth = 0, out: number[] = []): number[] {
  if (depth === 0) {
    let d: Nested = data
    while (Array.isArray(d)) {
      shape.push(d.length)
      d = d[0]
    }
  }
  if (!Array.isArray(data) || data.length !== shape[depth])
    fail('ERR_SHAPE', `data: ragged nested array (expected ${shape[depth]} entries at depth ${depth})`)
  for (const v of data) {
    if (depth + 1 < shape.length) flatten(v as Nested[], shape, depth + 1, out)
    else {
      if (typeof v !== 'number') fail('ERR_ARGUMENT', `data: expected numbers, got ${show(v)} at depth ${depth}`)
      out.push(v)
    }
  }
  return out
}

const TENSOR_OPTIONS = { dtype: optional(dtypeOf<DType>(['float32', 'bfloat16', 'int32'])), device: optional(device) }
const RANDN_OPTIONS = {
  dtype: optional(dtypeOf<FloatDType>(['float32', 'bfloat16'])), device: optional(device), seed: optional(seed64),
  mean: optional(number()), std: optional(number({ min: 0 })), truncate: optional(number({ min: 0 })),
}

/** @internal int32 tensors hold integers in [-2^31, 2^31 - 1]; float tensors take any number (NaN and ±Infinity included) */
export function checkFillValue(value: unknown, dt: DType, name = 'value'): number {
  if (dt === 'int32') return INT32(name, value)
  if (typeof value !== 'number') fail('ERR_ARGUMENT', `${name}: expected a number, got ${show(value)}`)
  return value
}

/**
 * A tensor from values: a typed array (with `shape`, default 1-D), or a (nested) number array
 * (shape inferred). Float32Array/number data becomes float32 unless `dtype` says otherwise;
 * Int32Array becomes int32. int32 values must be integers in [-2^31, 2^31 - 1].
 */
export function tensor<E extends DType>(data: Float32Array | Int32Array | Nested[], shape: readonly number[] | undefined, opts: TensorOptions & { dtype: E }): Tensor<E>
export function tensor(data: Int32Array, shape?: readonly number[], opts?: TensorOptions & { dtype?: undefined }): Tensor<'int32'>
export function tensor(data: Float32Array | Nested[], shape?: readonly number[], opts?: TensorOptions & { dtype?: undefined }): Tensor<'float32'>
export function tensor(data: Float32Array | Int32Array | Nested[], shape?: readonly number[], opts?: TensorOptions): Tensor
export function tensor(data: Float32Array | Int32Array | Nested[], shape?: readonly number[], opts: TensorOptions = {}): Tensor {
  const o = checkOptions('opts', opts, TENSOR_OPTIONS)
  const dev = o.device ?? Device.get('cpu')
  let flat: Float32Array | Int32Array | number[]
  let inferred: number[]
  if (data instanceof Float32Array || data instanceof Int32Array) {
    flat = data
    inferred = [data.length]
  } else if (Array.isArray(data)) {
    inferred = []
    flat = flatten(data, inferred)
    checkShape('data', inferred)
  } else fail('ERR_ARGUMENT', `data: expected a Float32Array, Int32Array or number array, got ${show(data)}`)
  const s = shape === undefined ? inferred : checkShape('shape', shape)
  if (numelOf(s) !== flat.length) fail('ERR_SHAPE', `shape: ${show(s)} holds ${numelOf(s)} elements, data has ${flat.length}`)
  const dtype = o.dtype ?? (flat instanceof Int32Array ? 'int32' : 'float32')
  if (dtype === 'int32' && !(flat instanceof Int32Array)) {
    for (let i = 0; i < flat.length; i++)
      if (!Number.isInteger(flat[i]) || flat[i] < -(2 ** 31) || flat[i] > 2 ** 31 - 1)
        fail('ERR_ARGUMENT', `data: int32 tensors need integers in [-2147483648, 2147483647], got ${show(flat[i])} at index ${i}`)
    flat = Int32Array.from(flat)
  }
  if (!(flat instanceof Float32Array) && dtype !== 'int32') flat = Float32Array.from(flat)
  const host = flat as Float32Array | Int32Array
  const hostDtype: DType = host instanceof Int32Array ? 'int32' : 'float32'
  if (hostDtype === dtype && dev.type === 'cpu') {
    const t = Tensor._alloc(s, dtype, dev)
    native.write(t._id, host)
    return t
  }
  const staged = Tensor._alloc(s, hostDtype, Device.get('cpu'))
  native.write(staged._id, host)
  const t = staged.to(dev, dtype)
  staged.dispose()
  return t
}

/** An uninitialised tensor (its values are whatever the memory held). */
export function empty<E extends DType>(shape: readonly number[], opts: TensorOptions & { dtype: E }): Tensor<E>
export function empty(shape: readonly number[], opts?: TensorOptions & { dtype?: undefined }): Tensor<'float32'>
export function empty(shape: readonly number[], opts?: TensorOptions): Tensor
export function empty(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  const s = checkShape('shape', shape)
  const o = checkOptions('opts', opts, TENSOR_OPTIONS)
  return Tensor._alloc(s, o.dtype ?? 'float32', o.device ?? Device.get('cpu'))
}

/** A tensor filled with `value` (for int32, an integer in [-2^31, 2^31 - 1]). */
export function full<E extends DType>(shape: readonly number[], value: number, opts: TensorOptions & { dtype: E }): Tensor<E>
export function full(shape: readonly number[], value: number, opts?: TensorOptions & { dtype?: undefined }): Tensor<'float32'>
export function full(shape: readonly number[], value: number, opts?: TensorOptions): Tensor
export function full(shape: readonly number[], value: number, opts: TensorOptions = {}): Tensor {
  checkShape('shape', shape)
  checkFillValue(value, checkOptions('opts', opts, TENSOR_OPTIONS).dtype ?? 'float32')
  return empty(shape, opts).fill_(value)
}

export function zeros<E extends DType>(shape: readonly number[], opts: TensorOptions & { dtype: E }): Tensor<E>
export function zeros(shape: readonly number[], opts?: TensorOptions & { dtype?: undefined }): Tensor<'float32'>
export function zeros(shape: readonly number[], opts?: TensorOptions): Tensor
/** A tensor of zeros. */
export function zeros(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return full(shape, 0, opts)
}

/** Options of randn: a float dtype, the seed and the distribution. */
export interface RandnOptions extends TensorOptions {
  /** 'float32' (default) or 'bfloat16' */
  dtype?: FloatDType
  /** 64-bit seed (number up to 2^53, or bigint). Default 0. */
  seed?: number | bigint
  /** Default 0. */
  mean?: number
  /** Default 1. */
  std?: number
  /**
   * Redraw values beyond `truncate` standard deviations (0 = no truncation). Truncation must be
   * at least MIN_TRUNCATE (0.1): a value is redrawn at most 1000 times, and below that bound the
   * draws could run out and leave values outside the range.
   */
  truncate?: number
}

/** Smallest non-zero `truncate`: 1000 draws all miss [-0.1, 0.1] with probability (1 - 0.0797)^1000 < 1e-36. */
export const MIN_TRUNCATE = 0.1

/** @internal splits a 64-bit seed into its (low, high) words */
export function seedWords(seed: number | bigint, name = 'seed'): [number, number] {
  const s = seed64(name, seed)
  return [Number(s & 0xffffffffn), Number(s >> 32n)]
}

/** Normal random values from Philox (identical for the same seed on every device and thread count). */
export function randn<E extends FloatDType>(shape: readonly number[], opts: RandnOptions & { dtype: E }): Tensor<E>
export function randn(shape: readonly number[], opts?: RandnOptions & { dtype?: undefined }): Tensor<'float32'>
export function randn(shape: readonly number[], opts?: RandnOptions): Tensor<FloatDType>
export function randn(shape: readonly number[], opts: RandnOptions = {}): Tensor<FloatDType> {
  const s = checkShape('shape', shape)
  const o = checkOptions('opts', opts, RANDN_OPTIONS)
  const dtype: FloatDType = o.dtype ?? 'float32'
  const [lo, hi] = seedWords(o.seed ?? 0)
  const mean = o.mean ?? 0
  const std = o.std ?? 1
  const truncate = o.truncate ?? 0
  if (truncate !== 0 && truncate < MIN_TRUNCATE)
    fail('ERR_ARGUMENT', `truncate: expected 0 (none) or >= ${MIN_TRUNCATE} standard deviations, got ${truncate}`)
  const dev = o.device ?? Device.get('cpu')
  const t = Tensor._alloc(s, 'float32', Device.get('cpu'))
  native.randn(t._id, lo, hi, mean, std, truncate)
  if (dtype === 'float32' && dev.type === 'cpu') return t
  const out = t.to(dev, dtype)
  t.dispose()
  return out
}
