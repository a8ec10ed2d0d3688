// MoEFFN on CPU against a float64 reference written per expert (each expert's own up, gate and down
// matrices, stacked into ff_proj / ff_out only to load them): forward, stats, the balance loss,
// and every gradient against central differences of Σ⟨G, y⟩ + aux.
import t from 'tap'
import { MoEFFN, tensor } from '../lib/index'
import { _ffnTestHooks } from '../lib/nn/ffn'
import { f32, matvec, maxDiff, norm, rand, silu } from './helpers/ffn-ref'

_ffnTestHooks.poison = true

interface Cfg { N: number; K: number; E: number; alpha: number }
interface Experts { D: number; norm: Float64Array; up: Float64Array[]; gate: Float64Array[]; down: Float64Array[]; router: Float64Array }

function makeExperts(D: number, cfg: Cfg, seed: number): Experts {
  const { N, E } = cfg
  return {
    D,
    norm: rand(D, seed + 1).map((v) => 1 + 0.5 * v),
    up: Array.from({ length: N }, (_, e) => rand(E * D, seed + 10 + e, 1 / Math.sqrt(D))),
    gate: Array.from({ length: N }, (_, e) => rand(E * D, seed + 40 + e, 1 / Math.sqrt(D))),
    down: Array.from({ length: N }, (_, e) => rand(D * E, seed + 70 + e, 1 / Math.sqrt(E))),
    router: rand(N * D, seed + 2, 2 / Math.sqrt(D)),
  }
}

/** docs/SPEC.md's layout: ff_proj rows [e·E, (e+1)·E) = up_e, rows N·E + the same = gate_e; ff_out columns [e·E, (e+1)·E) = down_e */
function stack(w: Experts, cfg: Cfg): Record<string, Float32Array> {
  const { N, E } = cfg, D = w.D, I = N * E
  const proj = new Float32Array(2 * I * D), out = new Float32Array(D * I)
  for (let e = 0; e < N; e++) {
    proj.set(w.up[e], e * E * D)
    proj.set(w.gate[e], (I + e * E) * D)
    for (let d = 0; d < D; d++) for (let c = 0; c < E; c++) out[d * I + e * E + c] = w.down[e][d * E + c]
  }
  return { 'ff_norm.weight': f32(w.norm), 'ff_proj.weight': proj, 'ff_out.weight': out, 'expert_gate.weight': f32(w.router) }
}

interface Tok { y: Float64Array; experts: number[]; weights: number[]; routerP: number[] }

function moeToken(x: Float64Array, w: Experts, cfg: Cfg): Tok {
  const { N, K, E } = cfg, D = w.D
  const r = matvec(w.router, x, N)
  const experts: number[] = []
  for (let k = 0; k < K; k++) {
    let best = -1
    for (let e = 0; e < N; e++) if (!experts.includes(e) && (best < 0 || r[e] > r[best])) best = e
    experts.push(best)
  }
  const ex = experts.map((e) => Math.exp(r[e] - r[experts[0]]))
  const weights = ex.map((v) => v / ex.reduce((a, b) => a + b, 0))
  const rmax = Math.max(...r)
  const re = Array.from(r, (v) => Math.exp(v - rmax))
  const routerP = re.map((v) => v / re.reduce((a, b) => a + b, 0))
  const n = norm(x, w.norm)
  const y = Float64Array.from(x)
  experts.forEach((e, k) => {
    const u = matvec(w.up[e], n, E), g = matvec(w.gate[e], n, E)
    for (let d = 0; d < D; d++) {
      let s = 0
      for (let c = 0; c < E; c++) s += w.down[e][d * E + c] * silu(g[c]) * u[c]
      y[d] += weights[k] * s
    }
  })
  return { y, experts, weights, routerP }
}

function run(x: Float64Array, w: Experts, cfg: Cfg, T: number): Tok[] {
  return Array.from({ length: T }, (_, i) => moeToken(x.subarray(i * w.D, (i + 1) * w.D), w, cfg))
}

function balance(toks: Tok[], cfg: Cfg, f: number[]): number {
  let aux = 0
  for (let e = 0; e < cfg.N; e++) aux += f[e] * toks.reduce((a, r) => a + r.routerP[e], 0) / toks.length
  return cfg.alpha * cfg.N * aux
}

const countsOf = (toks: Tok[], N: number) => Array.from({ length: N }, (_, e) => toks.reduce((a, r) => a + r.experts.filter((v) => v === e).length, 0))

const cases: [string, number, number, Cfg][] = [
  ['paper ratios (N = 8, K = 2)', 9, 16, { N: 8, K: 2, E: 6, alpha: 1e-2 }],
  ['T = 1', 1, 8, { N: 4, K: 2, E: 5, alpha: 1e-2 }],
  ['ragged: T prime, odd D and E', 13, 7, { N: 3, K: 2, E: 9, alpha: 1e-2 }],
  ['N = 1', 5, 8, { N: 1, K: 1, E: 12, alpha: 1e-2 }],
  ['K = N', 6, 8, { N: 4, K: 4, E: 3, alpha: 1e-2 }],
]

for (const [name, T, D, cfg] of cases) {
  t.test(`moe forward, ${name}`, async (t) => {
    const w = makeExperts(D, cfg, T * 7 + D)
    const x = rand(T * D, T + 99)
    const ffn = new MoEFFN({ dModel: D, experts: cfg.N, topK: cfg.K, expertHidden: cfg.E, balanceLossWeight: cfg.alpha })
    t.same(ffn.stateDict()['ff_proj.weight'].shape, [2 * cfg.N * cfg.E, D], 'stacked expert weights')
    ffn.loadStateDict(stack(w, cfg))
    const ref = run(x, w, cfg, T)
    // float32 kernels vs float64: one FFN of O(1) terms, sums of at most 16 products
    const tol = 2e-5
    for (const train of [false, true]) {
      const out = train ? ffn.forward(tensor(f32(x), [T, D]), { train: true }) : ffn.forward(tensor(f32(x), [T, D]))
      const what = train ? 'training' : 'inference'
      t.ok(maxDiff(await out.y.data(), ref.flatMap((r) => Array.from(r.y))) < tol, `${what} y = x + Σ_k w_k·FFN_e_k(x)`)
      t.same(Array.from(await out.stats.experts.data()), ref.flatMap((r) => r.experts), `${what} experts`)
      t.ok(maxDiff(await out.stats.weights.data(), ref.flatMap((r) => r.weights)) < 1e-6, `${what} routing weights`) // one float32 softmax
      t.same(Array.from(await out.stats.expertCounts.data()), countsOf(ref, cfg.N), `${what} expert counts`)
      if (train) {
        const rec = out as ReturnType<MoEFFN['forward']> & { auxLoss: { data(): Promise<Float32Array> }; dispose(): void }
        const f = countsOf(ref, cfg.N).map((c) => c / (T * cfg.K))
        const aux = (await rec.auxLoss.data())[0]
        // float32 probabilities summed in float64
        t.ok(Math.abs(aux - balance(ref, cfg, f)) < 1e-6 * Math.max(1, aux), `balance loss ${aux}`)
        rec.dispose()
      }
    }
    t.ok(new Set(ref.map((r) => r.experts[0])).size > 1 || cfg.N === 1 || T === 1, 'tokens pick different experts')
  })
}

for (const [name, T, D, cfg] of [
  ['paper ratios', 7, 6, { N: 4, K: 2, E: 4, alpha: 0.05 }],
  ['ragged, K = N', 5, 5, { N: 3, K: 3, E: 5, alpha: 0.2 }],
  ['N = 1', 3, 4, { N: 1, K: 1, E: 6, alpha: 0.1 }],
] as [string, number, number, Cfg][]) {
  t.test(`moe gradients: ${name}`, async (t) => {
    const w = makeExperts(D, cfg, 500 + T)
    const x = rand(T * D, 16)
    const G = rand(T * D, 17)
    const ffn = new MoEFFN({ dModel: D, experts: cfg.N, topK: cfg.K, expertHidden: cfg.E, balanceLossWeight: cfg.alpha })
    ffn.loadStateDict(stack(w, cfg))
    const base = run(x, w, cfg, T)
    // the counts f are constants of the balance loss (docs/SPEC.md); top-K is flat under small steps
    const f0 = countsOf(base, cfg.N).map((c) => c / (T * cfg.K))
    const loss = () => {
      const toks = run(x, w, cfg, T)
      let s = 0
      toks.forEach((r, i) => r.y.forEach((v, j) => (s += v * G[i * D + j])))
      return s + balance(toks, cfg, f0)
    }
    const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true })
    ffn.zeroGrad()
    const dx = await ffn.backward(tr, tensor(f32(G), [T, D])).data()
    const grads: Record<string, Float32Array> = {}
    for (const [n, g] of Object.entries(ffn.grads)) grads[n] = await g.floatData()
    const h = 1e-6
    const fd = (a: Float64Array, i: number) => {
      const v = a[i]
      a[i] = v + h
      const up = loss()
      a[i] = v - h
      const dn = loss()
      a[i] = v
      return (up - dn) / (2 * h)
    }
    // the stacked gradients as per-expert arrays, in the same layout as stack()
    const { N, E } = cfg, I = N * E
    const checks: [string, Float64Array, (i: number) => number][] = [
      ['x', x, (i) => dx[i]],
      ['ff_norm.weight', w.norm, (i) => grads['ff_norm.weight'][i]],
      ['expert_gate.weight', w.router, (i) => grads['expert_gate.weight'][i]],
    ]
    for (let e = 0; e < N; e++) {
      checks.push([`experts.${e}.up_proj`, w.up[e], (i) => grads['ff_proj.weight'][e * E * D + i]])
      checks.push([`experts.${e}.gate_proj`, w.gate[e], (i) => grads['ff_proj.weight'][(I + e * E) * D + i]])
      checks.push([`experts.${e}.down_proj`, w.down[e], (i) => grads['ff_out.weight'][Math.floor(i / E) * I + e * E + (i % E)]])
    }
    for (const [label, arr, got] of checks) {
      const want = Array.from({ length: arr.length }, (_, i) => fd(arr, i))
      const have = Array.from({ length: arr.length }, (_, i) => got(i))
      const scale = Math.max(...want.map(Math.abs))
      const chosen = !label.startsWith('experts.') || base.some((r) => r.experts.includes(Number(label.split('.')[1])))
      if (chosen) t.ok(scale > 1e-4 || (label === 'expert_gate.weight' && N === 1), `d ${label} is not negligible`)
      // float32 backward of one FFN vs float64 differences (truncation ~1e-10): rounding relative to the scale, plus a floor
      const diff = maxDiff(have, want)
      t.ok(diff < 1e-4 * scale + 1e-7, `d ${label}: max |diff| ${diff.toExponential(2)} (scale ${scale.toExponential(2)})`)
    }
  })
}

t.test('moe: auxGrad scales the balance loss, 0 turns it off; retain allows a second backward', async (t) => {
  const D = 6, T = 5, cfg = { N: 4, K: 2, E: 3, alpha: 0.5 }
  const w = makeExperts(D, cfg, 3)
  const x = tensor(f32(rand(T * D, 4)), [T, D]), G = tensor(f32(rand(T * D, 5)), [T, D])
  const ffn = new MoEFFN({ dModel: D, experts: cfg.N, topK: cfg.K, expertHidden: cfg.E, balanceLossWeight: cfg.alpha })
  ffn.loadStateDict(stack(w, cfg))
  const router = async (auxGrad: number) => {
    ffn.zeroGrad()
    const tr = ffn.forward(x, { train: true })
    ffn.backward(tr, G, { auxGrad, retain: true }).dispose()
    const once = await ffn.grads['expert_gate.weight'].data()
    ffn.backward(tr, G, { auxGrad }).dispose()
    const twice = await ffn.grads['expert_gate.weight'].data()
    t.ok(maxDiff(twice, once.map((v) => 2 * v)) < 1e-6, `auxGrad ${auxGrad}: a retained record gives the same gradient again`)
    return once
  }
  const g0 = await router(0), g1 = await router(1), g2 = await router(2)
  // linear in auxGrad: g(2) − g(1) = g(1) − g(0), and that difference is not zero
  const d1 = g1.map((v, i) => v - g0[i]), d2 = g2.map((v, i) => v - g1[i])
  t.ok(maxDiff(d1, d2) < 1e-6 && Math.max(...Array.from(d1, Math.abs)) > 1e-5, 'the balance term is linear in auxGrad')
  t.throws(() => ffn.backward({ y: x } as never, G), { code: 'ERR_ARGUMENT' })
})

t.test('moe: expertStateDict gives each expert under OLMoE\'s names, the values of the stacked layout', async (t) => {
  const D = 5, cfg = { N: 3, K: 2, E: 4, alpha: 0 }
  const w = makeExperts(D, cfg, 8)
  const ffn = new MoEFFN({ dModel: D, experts: cfg.N, topK: cfg.K, expertHidden: cfg.E })
  ffn.loadStateDict(stack(w, cfg))
  const sd = ffn.expertStateDict()
  t.same(Object.keys(sd).length, 1 + 3 * cfg.N)
  t.same(Array.from(await sd['gate.weight'].data()), Array.from(f32(w.router)), 'gate.weight = expert_gate.weight')
  for (let e = 0; e < cfg.N; e++) {
    t.same(sd[`experts.${e}.up_proj.weight`].shape, [cfg.E, D])
    t.same(Array.from(await sd[`experts.${e}.up_proj.weight`].data()), Array.from(f32(w.up[e])), `expert ${e} up`)
    t.same(Array.from(await sd[`experts.${e}.gate_proj.weight`].data()), Array.from(f32(w.gate[e])), `expert ${e} gate`)
    t.same(sd[`experts.${e}.down_proj.weight`].shape, [D, cfg.E])
    t.ok(sd[`experts.${e}.down_proj.weight`].isContiguous, 'down_proj is contiguous (safetensors writes it as is)')
    t.same(Array.from(await sd[`experts.${e}.down_proj.weight`].data()), Array.from(f32(w.down[e])), `expert ${e} down`)
  }
  for (const v of Object.values(sd)) v.dispose()
  ffn.dispose()
})

t.test('moe defaults: equal active parameters to the dense FFN of width 4·D', async (t) => {
  const ffn = new MoEFFN({ dModel: 8 })
  t.equal(ffn.experts, 8)
  t.equal(ffn.topK, 2)
  t.equal(ffn.expertHidden, 16, 'E = 4·D / K, so K·E = 4·D')
  t.equal(ffn.balanceLossWeight, 1e-5)
  t.same(ffn.namedParameters().map(([n, p]) => [n, p.shape]), [
    ['ff_norm.weight', [8]], ['ff_proj.weight', [2 * 8 * 16, 8]], ['ff_out.weight', [8, 8 * 16]], ['expert_gate.weight', [8, 8]],
  ])
  // any leading shape: [2, 3, D] is the six tokens of [6, D], stats in row-major token order
  const xs = f32(rand(6 * 8, 21))
  const flat = ffn.forward(tensor(xs, [6, 8])), deep = ffn.forward(tensor(xs, [2, 3, 8]))
  t.same(deep.y.shape, [2, 3, 8])
  t.same(Array.from(await deep.y.data()), Array.from(await flat.y.data()), 'the same y')
  t.same(Array.from(await deep.stats.experts.data()), Array.from(await flat.stats.experts.data()), 'the same routing')
  ffn.dispose()
})
