// Types of the raw native module (build/Release/versatile_ffn.node or prebuilds/). The public
// API in lib/ wraps every call with validation; nothing here validates beyond memory safety.

/**
 * What a native op reads from a tensor argument: a handle id (a lib/ Tensor's `_id`: one slot of
 * this thread's handle table, holding a reference to the memory and the view, see
 * native/napi/storage.h), or an object carrying one. A raw handle (alloc()) has no view: an object
 * around it gives its dtype code, offset, shape and strides, checked on every use.
 */
export type NativeTensor = number | { _id: number; _dt?: number; offset?: number; shape?: readonly number[]; strides?: readonly number[] }

/** A recorded step (native/napi/graph.cpp): ops with their plans, run again by graphReplay. */
export interface NativeGraph {
  readonly __graph: unique symbol
}

export interface Binding {
  /** Native errors are made as instances of `cls` (constructed with code and message) from now on. */
  setErrorClass(cls: new (...args: never[]) => Error): void
  /** A raw handle on new memory, without a view. */
  alloc(deviceType: number, deviceIndex: number, bytes: number): number
  /** A handle on new memory with a contiguous view of `shape` (dtype code 0 float32, 1 bfloat16, 2 int32). */
  empty(deviceType: number, deviceIndex: number, dtype: number, shape: readonly number[]): number
  /** A new handle on t's memory with the given view, checked against the memory once. */
  view(t: NativeTensor, dtype: number, offset: number, shape: readonly number[], strides: readonly number[]): number
  /** Drops a handle's reference (false when it named no live handle); memory is freed when no handle or queued op holds it. */
  release(id: number): boolean
  /** The number of live handles of this thread. */
  liveHandles(): number
  write(t: NativeTensor, data: Float32Array | Int32Array | Uint16Array): void
  read(t: NativeTensor, raw?: boolean): Promise<Float32Array | Int32Array | Uint16Array>
  sync(deviceType: number, deviceIndex: number): Promise<void>
  copy(dst: NativeTensor, src: NativeTensor): void
  fill(t: NativeTensor, value: number): void
  randn(t: NativeTensor, seedLo: number, seedHi: number, mean: number, std: number, truncate: number): void
  memory(deviceType: number, deviceIndex: number, resetPeak?: boolean): { live: number; cached: number; peak: number }
  /** CPU tensors created on this thread from now on take their memory when the first op runs on them; returns the previous setting. */
  deferAlloc(on: boolean): boolean
  cudaInfo(): { available: boolean; reason: string; count: number }
  threads(n?: number): number
  spinWait(microseconds?: number): number
  philox(c0: number, c1: number, c2: number, c3: number, seedLo: number, seedHi: number): number[]
  kernelInfo(): { gemm: string; gemmSmall: string }
  gemm(c: NativeTensor, a: NativeTensor, b: NativeTensor, transA: boolean, transB: boolean, alpha: number, beta: number): void
  /** Test hook: `c = alpha * a[rows] @ op(b) + beta * c` through the GEMM's row gather. */
  _gemmRows(c: NativeTensor, a: NativeTensor, rows: NativeTensor, b: NativeTensor, transB: boolean, alpha: number, beta: number): void

  // ---- FFN layers (native/core/ffn_args.h); outputs first, then inputs, saved values, sizes ----
  rmsnormForward(out: NativeTensor, rstd: NativeTensor | null, x: NativeTensor, weight: NativeTensor, eps: number): void
  rmsnormBackward(dx: NativeTensor, dweight: NativeTensor, dout: NativeTensor, x: NativeTensor, weight: NativeTensor, rstd: NativeTensor): void
  /** rstd and h are the saved values of training (null at inference; h null with recompute, and backward computes it again). */
  ffnForward(y: NativeTensor, x: NativeTensor, normW: NativeTensor, projW: NativeTensor, outW: NativeTensor,
             rstd: NativeTensor | null, h: NativeTensor | null, eps: number): void
  ffnBackward(dx: NativeTensor, dnormW: NativeTensor, dprojW: NativeTensor, doutW: NativeTensor, dy: NativeTensor, x: NativeTensor,
              normW: NativeTensor, projW: NativeTensor, outW: NativeTensor, rstd: NativeTensor, h: NativeTensor | null, eps: number,
              /** h null: round the recomputed pre-activations to bfloat16, as forward saves them under bf16-mixed */ hBf16?: boolean): void
  /** Named fields (x, normW, projW, outW, routerW, depthW, y, loops, lambda, expertsOut, weights, expertCounts, aux,
   *  saved?, experts, topK, maxDepth, expertHidden, eps, balanceWeight, train, noise, seedLo, seedHi, tau); see lib/nn/versatile.ts. */
  versatileForward(args: Record<string, unknown>): void
  /** The forward's fields plus dx, dy, dNormW, dProjW, dOutW, dRouterW, dDepthW, auxGrad. */
  versatileBackward(args: Record<string, unknown>): void
  /** Named fields (x, normW, projW, outW, routerW, y, expertsOut, weights, expertCounts, aux, saved?, experts, topK,
   *  expertHidden, eps, balanceWeight, train); see lib/nn/moe.ts. */
  moeForward(args: Record<string, unknown>): void
  /** The forward's fields plus dx, dy, dNormW, dProjW, dOutW, dRouterW, auxGrad. */
  moeBackward(args: Record<string, unknown>): void

  // ---- language-model ops (native/core/lm_args.h) ----
  embeddingForward(out: NativeTensor, weight: NativeTensor, tokens: NativeTensor): void
  embeddingBackward(dweight: NativeTensor, dout: NativeTensor, tokens: NativeTensor): void
  /** starts (int32 [B]) puts row b's token s at starts[b] + s instead of posOffset + s. */
  ropeForward(x: NativeTensor, heads: number, posOffset: number, theta: number, starts?: NativeTensor | null): void
  ropeBackward(x: NativeTensor, heads: number, posOffset: number, theta: number, starts?: NativeTensor | null): void
  attentionForward(out: NativeTensor, lse: NativeTensor, q: NativeTensor, k: NativeTensor, v: NativeTensor,
                   heads: number, qOffset: number, scale: number): void
  attentionBackward(dq: NativeTensor, dk: NativeTensor, dv: NativeTensor, dout: NativeTensor, q: NativeTensor, k: NativeTensor,
                    v: NativeTensor, out: NativeTensor, lse: NativeTensor, heads: number, qOffset: number, scale: number): void
  crossEntropyForward(loss: NativeTensor, lse: NativeTensor, logits: NativeTensor, targets: NativeTensor, ignoreIndex: number): void
  crossEntropyBackward(dlogits: NativeTensor, logits: NativeTensor, lse: NativeTensor, targets: NativeTensor, dloss: number, ignoreIndex: number): void
  /** out [2] = (global L2 norm, clip coefficient for maxNorm) */
  gradNorm(out: NativeTensor, grads: NativeTensor[], maxNorm: number): void
  adamwStep(param: NativeTensor, m: NativeTensor, v: NativeTensor, grad: NativeTensor, clip: NativeTensor | null,
            lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number,
            copy?: NativeTensor | null): void
  axpy(y: NativeTensor, x: NativeTensor, alpha: number): void

  // ---- serving (native/core/lm_args.h): a paged KV cache, sampling on the device ----
  kvWrite(kPool: NativeTensor, vPool: NativeTensor, k: NativeTensor, v: NativeTensor, slots: NativeTensor): void
  pagedAttention(out: NativeTensor, q: NativeTensor, kPool: NativeTensor, vPool: NativeTensor, blockTable: NativeTensor,
                 lens: NativeTensor, heads: number, scale: number): void
  sample(ids: NativeTensor, logprobs: NativeTensor, logits: NativeTensor, params: NativeTensor): void
  /** Runs fn, recording the ops it queues (not running them); replay runs them all with one call. */
  graphRecord(fn: () => void): NativeGraph
  /** Writes data[i] into inputs[i] (contiguous, on the recording's device), then runs the recorded ops: one stream task. */
  graphReplay(g: NativeGraph, inputs?: NativeTensor[], data?: (Float32Array | Int32Array)[]): void
  graphRelease(g: NativeGraph): void
  graphInfo(g: NativeGraph): { ops: number; owned: number; packedBytes: number }

  /** Resolves (in stream order) with null when the tensor's values are valid, else with the failure it carries. */
  failed(t: NativeTensor): Promise<null | { op: string; code: string; message: string }>
  /** Test hook: queues an op that writes `t` and fails with `message`. */
  _debugFail(t: NativeTensor, message: string): void
  /** Test hook: keeps the device's worker busy for `ms` milliseconds. */
  _debugSleep(deviceType: number, deviceIndex: number, ms: number): void
  [op: string]: unknown
}

declare const binding: Binding
export default binding
