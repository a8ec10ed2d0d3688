// Forcing a depth distribution from the outside, the way a user could: through the input and a
// crafted `depth_predictor.weight` loaded with loadStateDict. The loop head is linear with no bias
// (z = W_depth · x), so the benchmark writes a constant 1 into input column 0 and the wanted loop
// index c_t (0-based) into column 1, and sets row j of W_depth to (-A·j², 2A·j, 0, ...):
//   z_j = 2A·j·c_t − A·j² = A·c_t² − A·(j − c_t)²,
// largest exactly at j = c_t, ahead of the next by at least A. A = 4 keeps every value exact in
// bfloat16 for L <= 16 and makes Gumbel noise (training) rarely flip the choice.
import { mulberry32 } from '../random'
import type { DepthMode } from './config'

const A = 4


/** Share of tokens per loop count 1..L for a forced mode. */
export function depthShares(mode: DepthMode, L: number): number[] {
  const idx = Array.from({ length: L }, (_, j) => j)
  switch (mode.kind) {
    case 'uniform':
      return idx.map(() => 1 / L)
    case 'shallow':
    case 'deep': {
      // shares halve with each extra loop (shallow) or each loop fewer (deep)
      const w = idx.map((j) => 2 ** -(mode.kind === 'shallow' ? j : L - 1 - j))
      const s = w.reduce((a, b) => a + b, 0)
      return w.map((v) => v / s)
    }
    case 'fixed':
      return idx.map((j) => (j + 1 === mode.loops ? 1 : 0))
    case 'random-init':
      throw new Error('random-init has no forced shares')
  }
}

/**
 * Loop count (1..L) per token: exact counts from the shares (largest remainder), in a seeded
 * shuffled order so deep and shallow tokens are interleaved as in real batches. null for random-init.
 */
export function forcedLoops(mode: DepthMode, tokens: number, L: number, seed: number): Int32Array | null {
  if (mode.kind === 'random-init') return null
  const shares = depthShares(mode, L)
  const exact = shares.map((p) => p * tokens)
  const counts = exact.map(Math.floor)
  let left = tokens - counts.reduce((a, b) => a + b, 0)
  const order = exact.map((v, j) => [v - Math.floor(v), j]).sort((a, b) => b[0] - a[0] || a[1] - b[1])
  for (let i = 0; left > 0; i++, left--) counts[order[i % L][1]]++
  const loops = new Int32Array(tokens)
  let p = 0
  counts.forEach((n, j) => loops.fill(j + 1, p, (p += n)))
  const r = mulberry32(seed ^ 0x5bd1e995)
  for (let i = tokens - 1; i > 0; i--) {
    const k = Math.floor(r() * (i + 1))
    const tmp = loops[i]
    loops[i] = loops[k]
    loops[k] = tmp
  }
  return loops
}

/** Writes the encoding into x [T, D] (row-major, D >= 2) in place. */
export function encodeLoops(x: Float32Array, D: number, loops: Int32Array): void {
  for (let t = 0; t < loops.length; t++) {
    x[t * D] = 1
    x[t * D + 1] = loops[t] - 1
  }
}

/** The crafted loop head [L, D] that picks c_t = column 1 of x (given column 0 is 1). */
export function depthHeadWeight(L: number, D: number): Float32Array {
  const w = new Float32Array(L * D)
  for (let j = 0; j < L; j++) {
    w[j * D] = -A * j * j
    w[j * D + 1] = 2 * A * j
  }
  return w
}
