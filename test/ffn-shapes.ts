// What the FFN modules take without arithmetic from the caller: the paper's defaults (I = 4D,
// N = 8, K = 2, L = 4, E = I/N) and inputs of any leading shape [..., D], which must give exactly
// the flat [T, D] call's values, stats and gradients, reshaped.
import t from 'tap'
import { DenseFFN, Tensor, VersatileFFN, device, randn } from '../lib/index'

const cpu = device('cpu')
const shapes = (m: DenseFFN | VersatileFFN) => Object.fromEntries(m.namedParameters().map(([n, p]) => [n, [...p.shape]]))

t.test('defaults: hidden 4·dModel; N = 8, K = 2, L = 4, E = I/N', async (t) => {
  const v = new VersatileFFN({ dModel: 24 })
  t.same([v.hidden, v.experts, v.topK, v.maxDepth, v.expertHidden, v.balanceLossWeight], [96, 8, 2, 4, 12, 1e-5])
  t.same(shapes(v), {
    'ff_norm.weight': [24], 'ff_proj.weight': [192, 24], 'ff_out.weight': [24, 96],
    'expert_gate.weight': [8, 24], 'depth_predictor.weight': [4, 24],
  })
  const d = new DenseFFN({ dModel: 24 })
  t.equal(d.hidden, 96)
  t.same(shapes(d), { 'ff_norm.weight': [24], 'ff_proj.weight': [192, 24], 'ff_out.weight': [24, 96] })
  // a given option still wins over its default, and E follows the given I and N
  const w = new VersatileFFN({ dModel: 24, hidden: 60, experts: 5 })
  t.same([w.hidden, w.experts, w.topK, w.maxDepth, w.expertHidden], [60, 5, 2, 4, 12])
  t.throws(() => new VersatileFFN({ dModel: 1 }), { code: 'ERR_ARGUMENT', message: /experts: expected at most hidden \(4\)/ }, 'I = 4 cannot hold 8 experts')
  for (const m of [v, d, w]) m.dispose()
})

const data = async (ts: Tensor[]) => Promise.all(ts.map(async (x) => Array.from(x.dtype === 'int32' ? await x.intData() : await x.floatData())))

for (const kind of ['versatile', 'dense'] as const) {
  t.test(`${kind}: [B, S, D] and [B, S1, S2, D] inputs give the flat call's results`, async (t) => {
    const D = 16
    const before = (await cpu.sync(), cpu.memory().live)
    const m = kind === 'versatile' ? new VersatileFFN({ dModel: D, seed: 3 }) : new DenseFFN({ dModel: D, seed: 3 })
    // larger weights than the 0.02 init so routing and depth vary across tokens
    for (const [, p] of m.namedParameters()) {
      if (p.ndim !== 2) continue
      const w = randn(p.shape, { seed: p.size, std: 0.3 })
      p.copy_(w)
      w.dispose()
    }
    for (const lead of [[3, 5], [2, 3, 2]]) {
      const T = lead.reduce((a, b) => a * b, 1)
      const x = randn([...lead, D], { seed: 11 })
      const flat = x.reshape([T, D])
      const inf3 = m.forward(x), inf2 = m.forward(flat)
      t.same(inf3.y.shape, [...lead, D], `inference y keeps the leading shape ${lead}`)
      t.same(await inf3.y.floatData(), await inf2.y.floatData(), 'inference: the same values as the flat call')
      const st = (o: typeof inf3) => ('loops' in o.stats ? [o.stats.loops, o.stats.lambda, o.stats.experts, o.stats.weights, o.stats.expertCounts] : [])
      t.same(await data(st(inf3)), await data(st(inf2)), 'inference: the same per-token stats, in row-major token order')
      if ('loops' in inf3.stats) {
        t.same(inf3.stats.loops.shape, [T], 'stats are per token [T]')
        t.ok(new Set(await inf3.stats.loops.intData()).size > 1, 'tokens take different depths (the check is not vacuous)')
      }

      const dy = randn([...lead, D], { seed: 12 })
      const dyFlat = dy.reshape([T, D])
      m.zeroGrad()
      const tr3 = m.forward(x, { train: true, noise: 'gumbel', seed: 5, step: 7 })
      t.same(tr3.y.shape, [...lead, D], 'training y keeps the leading shape')
      const dx3 = m.backward(tr3, dy)
      const g3 = await data(Object.values(m.grads))
      m.zeroGrad()
      const tr2 = m.forward(flat, { train: true, noise: 'gumbel', seed: 5, step: 7 })
      const dx2 = m.backward(tr2, dyFlat)
      const g2 = await data(Object.values(m.grads))
      t.same(dx3.shape, [...lead, D], 'dx has the shape of x')
      t.same(await dx3.floatData(), await dx2.floatData(), 'training: the same dx as the flat call')
      t.same(g3, g2, 'training: the same parameter gradients')
      t.ok(g3.every((g) => g.some((v) => v !== 0)), 'every gradient is non-zero (the comparison is not on zeros)')

      const tr = m.forward(x, { train: true })
      t.throws(() => m.backward(tr, dyFlat), { code: 'ERR_SHAPE', message: new RegExp(`dy: expected shape \\[${[...lead, D].join(', ')}\\]`) }, 'dy must have the shape of y')
      tr.dispose()
      for (const o of [inf3, inf2, tr3, tr2, tr]) {
        o.y.dispose()
        if ('dispose' in o.stats) (o.stats as { dispose(): void }).dispose()
        if ('auxLoss' in o && o.auxLoss) o.auxLoss.dispose()
      }
      for (const v of [x, flat, dy, dyFlat, dx3, dx2]) v.dispose()
    }
    // a non-contiguous [B, S, D] view is read through a copy, with the same result
    const big = randn([2, 6, D], { seed: 21 })
    const view = big.slice(1, 1, 4)
    const copy = view.clone()
    const a = m.forward(view), b = m.forward(copy)
    t.same(await a.y.floatData(), await b.y.floatData(), 'a strided view gives the values of its copy')
    for (const o of [a, b]) {
      o.y.dispose()
      if ('dispose' in o.stats) (o.stats as { dispose(): void }).dispose()
    }
    for (const v of [big, view, copy]) v.dispose()
    const empty = randn([2, 0, D])
    t.throws(() => m.forward(empty), { code: 'ERR_SHAPE' }, 'an empty leading size')
    empty.dispose()
    m.dispose()
    await cpu.sync()
    t.equal(cpu.memory().live, before, 'memory returns to where it was')
  })
}
