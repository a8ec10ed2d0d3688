// small deterministic test data shared by the LM and CUDA tests: a linear congruential
// generator, token ids from it, int32 token tensors, and the relative L2 error of two arrays
import { tensor } from '../../lib/index'

/** uniform in [0, 1), the same sequence for the same seed */
export function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32)
}

/** n ids in [0, V) */
export const ids = (n: number, V: number, seed: number): Int32Array => {
  const r = rng(seed)
  return Int32Array.from({ length: n }, () => Math.floor(r() * V))
}

export const tok = (a: Int32Array, shape: number[]) => tensor(a, shape, { dtype: 'int32' })

/** ||got - want|| / ||want||; Infinity for a length mismatch or a non-finite value */
export function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) return Infinity
  let num = 0, den = 0
  for (let i = 0; i < got.length; i++) {
    if (!Number.isFinite(got[i])) return Infinity
    num += (got[i] - want[i]) ** 2
    den += want[i] ** 2
  }
  return Math.sqrt(num / Math.max(den, 1e-30))
}
