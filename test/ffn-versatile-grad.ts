// VersatileFFN gradients on CPU: x and all five weights against float64 central differences of the
// reference loss Σ⟨G, y⟩ + aux, with noise off and with seeded Gumbel noise. The loop choice and
// top-K are piecewise constant, so the differenced function is the straight-through surrogate of
// docs/SPEC.md (h − stopgrad(p) + p, p held at its base value in the stop-gradient): its derivative is
// exactly the gradient backward must return. The straight-through terms are also checked against
// their closed form.
import t from 'tap'
import { VersatileFFN, tensor } from '../lib/index'
import { _ffnTestHooks } from '../lib/nn/ffn'
import { VCfg, Weights, balanceLoss, f32, gumbel, maxDiff, rand, versatileToken } from './helpers/ffn-ref'

_ffnTestHooks.poison = true

const NAMES = ['ff_norm.weight', 'ff_proj.weight', 'ff_out.weight', 'expert_gate.weight', 'depth_predictor.weight'] as const

for (const [label, T, D, I, cfg, noise, step] of [
  ['paper ratios, noise off', 6, 6, 16, { N: 4, K: 2, L: 3, E: 4, alpha: 0.05 }, 'none', 5000],
  ['paper ratios, seeded noise', 6, 6, 16, { N: 4, K: 2, L: 3, E: 4, alpha: 0.05 }, 'gumbel', 100],
  ['strided slices, K = N, L = 4, low τ', 5, 5, 23, { N: 3, K: 3, L: 4, E: 5, alpha: 0.2 }, 'gumbel', 30000],
  ['N = 1, L = 1', 3, 4, 8, { N: 1, K: 1, L: 1, E: 8, alpha: 0.1 }, 'none', 0],
] as [string, number, number, number, VCfg, 'none' | 'gumbel', number][]) {
  t.test(`versatile gradients: ${label}`, async (t) => {
    const seed = 987654321n
    const tau = Math.max(5 * 0.99984 ** step, 0.1)
    const w: Weights = {
      D, I,
      norm: rand(D, 11).map((v) => 1 + 0.5 * v),
      proj: rand(2 * I * D, 12, 1 / Math.sqrt(D)),
      out: rand(D * I, 13, 1 / Math.sqrt(I)),
      router: rand(cfg.N * D, 14, 2 / Math.sqrt(D)),
      depth: rand(cfg.L * D, 15, 2 / Math.sqrt(D)),
    }
    const x = rand(T * D, 16)
    const G = rand(T * D, 17)
    const ffn = new VersatileFFN({ dModel: D, hidden: I, experts: cfg.N, topK: cfg.K, maxDepth: cfg.L, expertHidden: cfg.E, balanceLossWeight: cfg.alpha })
    ffn.loadStateDict({
      'ff_norm.weight': f32(w.norm), 'ff_proj.weight': f32(w.proj), 'ff_out.weight': f32(w.out),
      'expert_gate.weight': f32(w.router!), 'depth_predictor.weight': f32(w.depth!),
    })
    const noiseOf = (i: number) => (noise === 'gumbel' ? Array.from({ length: cfg.L }, (_, j) => gumbel(seed, i, j)) : null)
    const run = (p0?: number[][]) =>
      Array.from({ length: T }, (_, i) => versatileToken(x.subarray(i * D, (i + 1) * D), w, cfg, true, noiseOf(i), tau, p0?.[i]))
    const base = run()
    const p0 = base.map((r) => r.p)
    const f0 = Array.from({ length: cfg.N }, (_, e) => base.reduce((a, r) => a + r.experts.filter((v) => v === e).length, 0) / (T * cfg.K))
    const loss = () => {
      const toks = run(p0)
      let s = 0
      toks.forEach((r, i) => r.y.forEach((v, j) => (s += v * G[i * D + j])))
      return s + balanceLoss(toks, cfg, f0)
    }
    t.ok(new Set(base.map((r) => r.loops)).size > 1 || cfg.L === 1, 'tokens choose different depths')

    const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true, step, noise, seed })
    t.same(Array.from(await tr.stats.loops.data()), base.map((r) => r.loops), 'loops as the reference')
    ffn.zeroGrad()
    const dx = await ffn.backward(tr, tensor(f32(G), [T, D])).data()
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
    const arrays: Record<string, Float64Array> = {
      x, 'ff_norm.weight': w.norm, 'ff_proj.weight': w.proj, 'ff_out.weight': w.out,
      'expert_gate.weight': w.router!, 'depth_predictor.weight': w.depth!,
    }
    for (const name of ['x', ...NAMES]) {
      const got = name === 'x' ? dx : await ffn.grads[name].data()
      const want = Array.from({ length: got.length }, (_, i) => fd(arrays[name], i))
      const scale = Math.max(...want.map(Math.abs))
      t.ok(scale > 1e-4 || (name === 'expert_gate.weight' && cfg.N === 1) || (name === 'depth_predictor.weight' && cfg.L === 1), `d ${name} is not negligible`)
      // float32 backward through up to L chained FFNs vs float64 differences (truncation ~1e-10):
      // float32 rounding of O(1) intermediates, relative to the gradient's scale, plus an absolute floor
      const diff = maxDiff(got, want)
      t.ok(diff < 1e-4 * scale + 1e-7, `d ${name}: max |diff| ${diff.toExponential(2)} (scale ${scale.toExponential(2)})`)
    }

    // straight-through terms in closed form: ∂/∂p_j = (1 − λ)⟨G, x^(j)⟩ − (j/L)⟨G, x_width − x_depth⟩,
    // through p = softmax((z + g)/τ) onto depth_predictor.weight
    const L = cfg.L
    const want = new Float64Array(L * D)
    base.forEach((r, i) => {
      const g = G.subarray(i * D, (i + 1) * D)
      const dot = (a: Float64Array) => a.reduce((s, v, k) => s + v * g[k], 0)
      const dl = dot(r.xw) - dot(r.xs[r.loops])
      const dp = Array.from({ length: L }, (_, j) => (1 - r.lambda) * dot(r.xs[j + 1]) - ((j + 1) / L) * dl)
      const pdp = r.p.reduce((s, p, j) => s + p * dp[j], 0)
      for (let j = 0; j < L; j++) for (let k = 0; k < D; k++) want[j * D + k] += (r.p[j] * (dp[j] - pdp)) / tau * x[i * D + k]
    })
    const got = await ffn.grads['depth_predictor.weight'].data()
    t.ok(maxDiff(got, want) < 2e-4 * Math.max(1, ...Array.from(want, Math.abs)), 'straight-through gradient of the loop head, closed form')
    if (L > 1) t.ok(Math.max(...Array.from(got, Math.abs)) > 1e-3, 'the loop head receives a gradient although argmax is flat')
  })
}
