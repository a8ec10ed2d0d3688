// VersatileFFN on CPU against the float64 reference of test/helpers/ffn-ref.ts ("run every loop,
// then select"): inference and training forward at the paper's ratios and ragged sizes, stats,
// the balance loss, seeded Gumbel noise.
import t from 'tap'
import { VersatileFFN, tensor } from '../lib/index'
import { _ffnTestHooks } from '../lib/nn/ffn'
import { VCfg, Weights, balanceLoss, gumbel, rand, versatileToken } from './helpers/ffn-ref'

_ffnTestHooks.poison = true
const f32 = (a: Float64Array) => Float32Array.from(a)

export function makeCase(T: number, D: number, I: number, cfg: VCfg, seed: number, depthScale = 1) {
  const { N, L } = cfg
  // unit-ish weights: the FFN term is as large as the residual; router/depth logits of O(1) spread
  const w: Weights = {
    D, I,
    norm: rand(D, seed + 1).map((v) => 1 + 0.5 * v),
    proj: rand(2 * I * D, seed + 2, 1 / Math.sqrt(D)),
    out: rand(D * I, seed + 3, 1 / Math.sqrt(I)),
    router: rand(N * D, seed + 4, 2 / Math.sqrt(D)),
    depth: rand(L * D, seed + 5, (2 * depthScale) / Math.sqrt(D)),
  }
  const x = rand(T * D, seed + 6)
  const ffn = new VersatileFFN({ dModel: D, hidden: I, experts: N, topK: cfg.K, maxDepth: L, expertHidden: cfg.E, balanceLossWeight: cfg.alpha })
  ffn.loadStateDict({
    'ff_norm.weight': f32(w.norm), 'ff_proj.weight': f32(w.proj), 'ff_out.weight': f32(w.out),
    'expert_gate.weight': f32(w.router!), 'depth_predictor.weight': f32(w.depth!),
  })
  return { w, x, ffn }
}

export function reference(x: Float64Array, w: Weights, cfg: VCfg, T: number, train: boolean, seed: bigint | null, tau: number, p0?: number[][]) {
  const toks = []
  for (let i = 0; i < T; i++) {
    const g = seed === null ? null : Array.from({ length: cfg.L }, (_, j) => gumbel(seed, i, j))
    toks.push(versatileToken(x.subarray(i * w.D, (i + 1) * w.D), w, cfg, train, g, tau, p0?.[i]))
  }
  return toks
}

export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i])
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d
  }
  return m
}

const cases: [string, number, number, number, VCfg][] = [
  ['paper ratios', 7, 16, 64, { N: 8, K: 2, L: 4, E: 8, alpha: 1e-2 }],
  ['T = 1', 1, 16, 64, { N: 8, K: 2, L: 4, E: 8, alpha: 1e-2 }],
  ['T prime, ragged D', 13, 12, 36, { N: 3, K: 2, L: 3, E: 12, alpha: 1e-2 }],
  ['N = 1', 5, 8, 16, { N: 1, K: 1, L: 3, E: 16, alpha: 1e-2 }],
  ['K = N', 6, 8, 24, { N: 4, K: 4, L: 2, E: 6, alpha: 1e-2 }],
  ['L = 1', 5, 8, 16, { N: 4, K: 2, L: 1, E: 4, alpha: 1e-2 }],
  ['E < I/N, strided slices', 11, 8, 40, { N: 3, K: 2, L: 4, E: 7, alpha: 1e-2 }],
]

for (const [name, T, D, I, cfg] of cases) {
  t.test(`versatile forward, ${name}`, async (t) => {
    const { w, x, ffn } = makeCase(T, D, I, cfg, T * 31 + I)
    // float32 kernels vs float64: up to L chained FFNs of O(1) terms, sums of ≤ 64 products each
    const tol = 5e-5
    const inf = reference(x, w, cfg, T, false, null, 1)
    const out = ffn.forward(tensor(f32(x), [T, D]), { train: false })
    t.ok(maxDiff(await out.y.data(), inf.flatMap((r) => Array.from(r.y))) < tol, 'inference y = every loop run, then selected')
    t.same(Array.from(await out.stats.loops.data()), inf.map((r) => r.loops), 'loops')
    t.same(Array.from(await out.stats.experts.data()), inf.flatMap((r) => r.experts), 'experts')
    t.ok(maxDiff(await out.stats.weights.data(), inf.flatMap((r) => r.weights)) < 1e-6, 'routing weights') // one float32 softmax
    t.same(Array.from(await out.stats.lambda.data()), inf.map((r) => Math.fround(r.lambda)), 'λ')
    const counts = Array.from({ length: cfg.N }, (_, e) => inf.reduce((a, r) => a + r.experts.filter((v) => v === e).length, 0))
    t.same(Array.from(await out.stats.expertCounts.data()), counts, 'expert counts')
    for (const noise of ['none', 'gumbel'] as const) {
      const seed = 1234567890123n
      const step = 3000
      const tau = Math.max(5 * 0.99984 ** step, 0.1)
      const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true, step, noise, seed })
      const ref = reference(x, w, cfg, T, true, noise === 'gumbel' ? seed : null, tau)
      t.equal(tr.tau, tau, 'τ(step)')
      t.same(Array.from(await tr.stats.loops.data()), ref.map((r) => r.loops), `training loops (${noise})`)
      t.ok(maxDiff(await tr.y.data(), ref.flatMap((r) => Array.from(r.y))) < tol, `training y (${noise})`)
      // float32 sums of T·N probabilities vs float64
      t.ok(Math.abs((await tr.auxLoss.data())[0] - balanceLoss(ref, cfg)) < 1e-6 * Math.max(1, balanceLoss(ref, cfg)), `balance loss (${noise})`)
      tr.dispose()
    }
  })
}

t.test('seeded noise changes the depth choice and is reproducible', async (t) => {
  const T = 64, D = 8, I = 32, cfg = { N: 4, K: 2, L: 4, E: 8, alpha: 0 }
  const { x, ffn } = makeCase(T, D, I, cfg, 5, 0.2)
  const run = async (noise: 'none' | 'gumbel', seed: number) => {
    const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true, step: 0, noise, seed })
    const r = { loops: Array.from(await tr.stats.loops.data()), y: await tr.y.data(), aux: (await tr.auxLoss.data())[0] }
    tr.dispose()
    return r
  }
  const a = await run('gumbel', 1), b = await run('gumbel', 1), c = await run('gumbel', 2), d = await run('none', 1)
  t.same(a.loops, b.loops, 'same seed, same loops')
  t.same(Array.from(a.y), Array.from(b.y), 'same seed, same y')
  t.notSame(a.loops, c.loops, 'another seed, other loops')
  t.notSame(a.loops, d.loops, 'noise changes loops')
  t.equal(a.aux, 0, 'α = 0: no balance loss')
})

t.test('ties: top-K and the loop head pick the lower index', async (t) => {
  const T = 9, D = 8, I = 32, cfg = { N: 4, K: 2, L: 3, E: 8, alpha: 0 }
  const { w, x, ffn } = makeCase(T, D, I, cfg, 77)
  // identical rows give bit-identical logits: experts 1 and 3 tie, loop logits 0 and 2 tie
  const v = rand(D, 78, 1)
  const router = new Float64Array(cfg.N * D), depth = new Float64Array(cfg.L * D)
  ;[0.5, 1, 0.2, 1].forEach((s, e) => v.forEach((a, i) => (router[e * D + i] = s * a)))
  ;[1, 0.3, 1].forEach((s, j) => v.forEach((a, i) => (depth[j * D + i] = s * a)))
  w.router = router
  w.depth = depth
  ffn.loadStateDict({ ...ffn.stateDict(), 'expert_gate.weight': f32(router), 'depth_predictor.weight': f32(depth) })
  const ref = reference(x, w, cfg, T, false, null, 1)
  const out = ffn.forward(tensor(f32(x), [T, D]))
  const experts = Array.from(await out.stats.experts.data())
  t.same(experts, ref.flatMap((r) => r.experts), 'experts as the reference')
  t.ok(ref.some((r) => r.experts[0] === 1 && r.experts[1] === 3), 'a tie between experts 1 and 3 occurred, 1 first')
  t.same(Array.from(await out.stats.loops.data()), ref.map((r) => r.loops), 'loops as the reference')
  t.ok(ref.some((r) => r.loops === 1), 'a tie between loop logits 0 and 2 went to 0')
  const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true, noise: 'none' })
  t.same(Array.from(await tr.stats.loops.data()), ref.map((r) => r.loops), 'training without noise: same tie rule')
  tr.dispose()
})

t.test('bfloat16 weights: the same as float32 weights holding the rounded values', async (t) => {
  const T = 10, D = 16, I = 64, cfg = { N: 8, K: 2, L: 4, E: 8, alpha: 1e-2 }
  const { x, ffn } = makeCase(T, D, I, cfg, 99)
  const b16 = new VersatileFFN({ dModel: D, hidden: I, experts: 8, topK: 2, maxDepth: 4, balanceLossWeight: 1e-2, dtype: 'bfloat16' })
  b16.loadStateDict(ffn.stateDict())
  const rounded: Record<string, Float32Array> = {}
  for (const [k, v] of Object.entries(b16.stateDict())) rounded[k] = await v.data()
  ffn.loadStateDict(rounded)
  t.equal(b16.params['ff_proj.weight'].dtype, 'bfloat16')
  const G = f32(rand(T * D, 5))
  const outs = []
  for (const m of [ffn, b16]) {
    const inf = m.forward(tensor(f32(x), [T, D]))
    const tr = m.forward(tensor(f32(x), [T, D]), { train: true, noise: 'gumbel', seed: 3 })
    const y = await tr.y.data()
    const dx = await m.backward(tr, tensor(G, [T, D])).data()
    const grads = await Promise.all(Object.values(m.grads).map((g) => g.data()))
    outs.push({ inf: await inf.y.data(), y, dx, grads })
  }
  // same float32 arithmetic on the same values; only the operand load differs
  t.ok(maxDiff(outs[1].inf, outs[0].inf) < 1e-5, 'inference y')
  t.ok(maxDiff(outs[1].y, outs[0].y) < 1e-5, 'training y')
  t.ok(maxDiff(outs[1].dx, outs[0].dx) < 1e-5, 'dx')
  outs[0].grads.forEach((g, i) => t.ok(maxDiff(outs[1].grads[i], g) < 1e-5, `gradient ${Object.keys(ffn.grads)[i]} (float32 either way)`))
})
