// Types of the raw native module (build/Release/versatile_ffn.node or prebuilds/). The public
// API in lib/ wraps every call with validation; nothing here validates beyond memory safety.

/** A reference-counted block of device memory; each handle holds one reference. */
export declare class Storage {
  private constructor()
  /** Drops this handle's reference; memory is freed when no handle or queued op holds it. */
  release(): void
  /** A new handle on the same memory. */
  share(): Storage
  readonly bytes: number
  readonly alive: boolean
}

/** What a native op reads from a lib/ Tensor. */
export interface NativeTensor {
  _h: Storage
  _dt: number
  offset: number
  shape: readonly number[]
  strides: readonly number[]
}

export interface Binding {
  Storage: typeof Storage
  alloc(deviceType: number, deviceIndex: number, bytes: number): Storage
  write(t: NativeTensor, data: Float32Array | Int32Array | Uint16Array): void
  read(t: NativeTensor, raw?: boolean): Promise<Float32Array | Int32Array | Uint16Array>
  sync(deviceType: number, deviceIndex: number): Promise<void>
  copy(dst: NativeTensor, src: NativeTensor): void
  fill(t: NativeTensor, value: number): void
  randn(t: NativeTensor, seedLo: number, seedHi: number, mean: number, std: number, truncate: number): void
  memory(deviceType: number, deviceIndex: number): { live: number; cached: number }
  cudaInfo(): { available: boolean; reason: string; count: number }
  threads(n?: number): number
  philox(c0: number, c1: number, c2: number, c3: number, seedLo: number, seedHi: number): number[]
  kernelInfo(): { gemm: string }
  gemm(c: NativeTensor, a: NativeTensor, b: NativeTensor, transA: boolean, transB: boolean, alpha: number, beta: number): void
  /** Test hook: queues work on the device that fails with `message`. */
  _debugFail(deviceType: number, deviceIndex: number, message: string): void
  [op: string]: unknown
}

declare const binding: Binding
export default binding
