// The bench's forced depth distributions: exact shares, and the crafted loop head picking exactly
// the encoded loop for every token (checked with a plain float64 argmax, ties to the lower index).
import t from 'tap'
import { depthHeadWeight, depthShares, encodeLoops, forcedLoops } from '../lib/bench/depth'
import { mulberry32 } from '../lib/random'
import { DepthMode } from '../lib/bench/config'

function argmaxLoops(x: Float32Array, w: Float32Array, T: number, D: number, L: number): number[] {
  const out: number[] = []
  for (let t = 0; t < T; t++) {
    let best = -Infinity
    let arg = -1
    for (let j = 0; j < L; j++) {
      let z = 0
      for (let d = 0; d < D; d++) z += w[j * D + d] * x[t * D + d]
      if (z > best) [best, arg] = [z, j]
    }
    out.push(arg + 1)
  }
  return out
}

t.test('shares and exact counts per mode', async (t) => {
  t.same(depthShares({ kind: 'shallow' }, 4).map((v) => +v.toFixed(4)), [0.5333, 0.2667, 0.1333, 0.0667])
  t.same(depthShares({ kind: 'deep' }, 4).map((v) => +v.toFixed(4)), [0.0667, 0.1333, 0.2667, 0.5333])
  const cases: [DepthMode, number, number, number[]][] = [
    [{ kind: 'uniform' }, 103, 4, [26, 26, 26, 25]],
    [{ kind: 'shallow' }, 60, 4, [32, 16, 8, 4]],
    [{ kind: 'deep' }, 60, 4, [4, 8, 16, 32]],
    [{ kind: 'fixed', loops: 2 }, 17, 3, [0, 17, 0]],
    [{ kind: 'uniform' }, 1, 4, [1, 0, 0, 0]],
  ]
  for (const [mode, T, L, want] of cases) {
    const loops = forcedLoops(mode, T, L, 7)!
    const counts = new Array(L).fill(0)
    for (const c of loops) counts[c - 1]++
    t.same(counts, want, `${mode.kind} T=${T} L=${L}`)
  }
  t.equal(forcedLoops({ kind: 'random-init' }, 8, 4, 1), null)
  const a = forcedLoops({ kind: 'uniform' }, 64, 4, 3)!
  t.same(a, forcedLoops({ kind: 'uniform' }, 64, 4, 3), 'same seed, same order')
  t.not(Array.from(a).join(), Array.from(forcedLoops({ kind: 'uniform' }, 64, 4, 4)!).join(), 'another seed shuffles differently')
  t.not(Array.from(a).slice(0, 16).join(), '1'.repeat(16).split('').join(), 'interleaved, not sorted')
})

t.test('crafted head picks the encoded loop for every token, whatever the other columns hold', async (t) => {
  for (const [T, D, L] of [[97, 5, 4], [40, 2, 1], [33, 7, 16]]) {
    const r = mulberry32(T * 31 + D)
    const x = Float32Array.from({ length: T * D }, () => (r() - 0.5) * 20)
    const loops = forcedLoops({ kind: 'uniform' }, T, L, 5)!
    encodeLoops(x, D, loops)
    const w = depthHeadWeight(L, D)
    t.same(argmaxLoops(x, w, T, D, L), Array.from(loops), `T=${T} D=${D} L=${L}`)
  }
})
