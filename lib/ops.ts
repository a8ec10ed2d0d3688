import { native } from './binding'
import { fail, show } from './errors'
import { FloatDType, Tensor } from './tensor'
import { Check, bool, checkOptions, custom, number, optional } from './validate'

/** @internal checks a tensor argument: alive, a Tensor, optionally of given dtypes and ndim */
export function checkTensor(name: string, t: unknown, opts: { ndim?: number; dtypes?: readonly string[] } = {}): Tensor {
  if (!(t instanceof Tensor)) fail('ERR_ARGUMENT', `${name}: expected a Tensor, got ${show(t)}`)
  t._check(name)
  if (opts.ndim !== undefined && t.ndim !== opts.ndim)
    fail('ERR_SHAPE', `${name}: expected ${opts.ndim} dimensions, got shape ${show(t.shape)}`)
  if (opts.dtypes && !opts.dtypes.includes(t.dtype))
    fail('ERR_DTYPE', `${name}: expected ${opts.dtypes.join(' or ')}, got ${t.dtype}`)
  return t
}

/** A tensor argument or option (see checkTensor) as a validation check. */
export function tensorArg(opts: { ndim?: number; dtypes?: readonly string[] } = {}): Check<Tensor> {
  const expected = `a${opts.dtypes ? ' ' + opts.dtypes.join(' or ') : ''} Tensor${opts.ndim !== undefined ? ` with ${opts.ndim} dimensions` : ''}`
  return custom(expected, (name, v) => checkTensor(name, v, opts))
}

export function checkSameDevice(ref: Tensor, others: Record<string, Tensor | undefined>): void {
  for (const [name, t] of Object.entries(others))
    if (t && t.device !== ref.device) fail('ERR_DEVICE', `${name}: expected a tensor on ${ref.device}, got one on ${t.device}`)
}

/** Options of matmul: transposes, scaling, and an output to write (or accumulate) into. */
export interface MatmulOptions {
  transposeA?: boolean
  transposeB?: boolean
  /** Scales the product. Default 1. */
  alpha?: number
  /** Scales what `out` held before (needs `out`). Default 0. */
  beta?: number
  /** Write into this [M, N] tensor (float32 or bfloat16) instead of a new one. */
  out?: Tensor
}

/**
 * `alpha * op(a) @ op(b) + beta * out`, float32 accumulation. a, b: 2-D float32 or bfloat16
 * tensors (row or column slices are free views). Returns `out` or a new float32 tensor.
 */
const MATMUL_OPTIONS = {
  transposeA: optional(bool), transposeB: optional(bool), alpha: optional(number()), beta: optional(number()),
  out: optional(tensorArg({ ndim: 2, dtypes: ['float32', 'bfloat16'] })),
}

/**
 * `out = alpha · op(a) · op(b) + beta · out`, op the transpose where asked; a and b 2-D float32 or
 * bfloat16 on one device (views and transposed views are read without copies). Returns `out`, or a
 * new float32 tensor. A non-zero beta needs `out`.
 */
export function matmul(a: Tensor, b: Tensor, opts?: MatmulOptions): Tensor<FloatDType> {
  checkTensor('a', a, MATMUL_OPERAND)
  checkTensor('b', b, MATMUL_OPERAND)
  const o = checkOptions('opts', opts, MATMUL_OPTIONS)
  const out = o.out
  if (b.device !== a.device) fail('ERR_DEVICE', `b: expected a tensor on ${a.device}, got one on ${b.device}`)
  if (out && out.device !== a.device) fail('ERR_DEVICE', `out: expected a tensor on ${a.device}, got one on ${out.device}`)
  const ta = o.transposeA ?? false
  const tb = o.transposeB ?? false
  const alpha = o.alpha ?? 1
  const beta = o.beta ?? 0
  const M = ta ? a.shape[1] : a.shape[0], K = ta ? a.shape[0] : a.shape[1]
  const Kb = tb ? b.shape[1] : b.shape[0], N = tb ? b.shape[0] : b.shape[1]
  if (K !== Kb)
    fail('ERR_SHAPE', `b: inner dimensions differ: op(a) is [${M}, ${K}] but op(b) is [${Kb}, ${N}]`)
  if (out !== undefined) {
    if (out.shape[0] !== M || out.shape[1] !== N) fail('ERR_SHAPE', `out: expected shape [${M}, ${N}], got ${show(out.shape)}`)
    if (out.shape[1] > 1 && out.strides[1] !== 1) fail('ERR_ARGUMENT', 'out: rows must be contiguous (last stride 1)')
  } else if (beta !== 0) fail('ERR_ARGUMENT', 'beta: a non-zero beta needs an `out` tensor to scale')
  // a 2-D operand whose columns are contiguous (a transposed view) is read as its transpose
  const ownA = columnMajor(a), ownB = columnMajor(b)
  const A = ownA ? a.T : a, B = ownB ? b.T : b
  if (A.shape[1] > 1 && A.strides[1] !== 1) fail('ERR_ARGUMENT', 'a: neither rows nor columns are contiguous; call contiguous() first')
  if (B.shape[1] > 1 && B.strides[1] !== 1) fail('ERR_ARGUMENT', 'b: neither rows nor columns are contiguous; call contiguous() first')
  const c = out ?? Tensor._alloc([M, N], 'float32', a.device)
  if (!ownA && !ownB) {
    native.gemm(c._id, A._id, B._id, ta, tb, alpha, beta)
    return c as Tensor<FloatDType>
  }
  try {
    native.gemm(c._id, A._id, B._id, ownA ? !ta : ta, ownB ? !tb : tb, alpha, beta)
  } finally {
    if (ownA) A.dispose()
    if (ownB) B.dispose()
  }
  return c as Tensor<FloatDType>
}

const MATMUL_OPERAND = { ndim: 2, dtypes: ['float32', 'bfloat16'] } as const
const columnMajor = (t: Tensor) => t.shape[1] > 1 && t.strides[1] !== 1 && t.strides[0] === 1

/**
 * @internal `t.reshape(shape)` for a temporary whose only use is the reshaped result: drops `t`'s
 * own handle, so disposing the result frees the memory (a bare `op(...).reshape()` would leave it).
 */
export function reshapeFree(t: Tensor, shape: readonly number[]): Tensor {
  try {
    return t.reshape(shape)
  } finally {
    t.dispose()
  }
}
