// The balance-loss weight of a model reaches trainStep's loss and backward, and trainStep drives the
// Gumbel temperature from the optimizer's step.
import t from 'tap'
import { AdamW, Tensor, TransformerLM, TransformerLMOptions, gumbelTemperature, randn, tensor, trainStep } from '../lib/index'

const cfg: TransformerLMOptions = { vocabSize: 23, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 8, experts: 4, topK: 2, maxDepth: 3, seed: 8 }
const B = 2, S = 6
const x = Int32Array.from({ length: B * S }, (_, i) => (i * 5 + 1) % 23)
const y = Int32Array.from({ length: B * S }, (_, i) => (i * 3 + 2) % 23)
const tok = () => tensor(x, [B, S], { dtype: 'int32' })

// the same larger-than-init weights for every model, so routing and depth vary across tokens
function model(extra: Partial<TransformerLMOptions> = {}): TransformerLM {
  const m = new TransformerLM({ ...cfg, ...extra })
  const sd: Record<string, Tensor> = {}
  let k = 0
  for (const [n, p] of m.parameters()) sd[n] = randn(p.shape, { seed: 900 + k++, std: /norm|ln_f/.test(n) ? 0.2 : 0.4, mean: /norm|ln_f/.test(n) ? 1 : 0 })
  m.loadStateDict(sd)
  for (const v of Object.values(sd)) v.dispose()
  return m
}
const maxAbs = (a: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i])); return m }

async function step(m: TransformerLM, opts: { accumulate?: number } = {}) {
  const o = new AdamW(m.parameters(), m.gradients(), { lr: 0 })
  const r = trainStep(m, o, tok(), y, { noise: 'none', ...opts })
  t.same(await r.status, { ok: true })
  const aux = await Promise.all(r.auxLoss.map(async (a) => (await a.data())[0]))
  const grads = new Map<string, Float32Array>()
  for (const [n, g] of m.gradients()) grads.set(n, await g.data())
  const loss = (await r.loss.data())[0]
  for (const z of [r.loss, r.gradNorm, ...r.auxLoss]) z.dispose()
  o.dispose()
  return { aux, grads, loss }
}

t.test('balanceLossWeight: 1e-5 by default, recorded, and the aux loss and its gradient scale with it', async (t) => {
  const d = new TransformerLM(cfg)
  t.equal(d.config.balanceLossWeight, 1e-5, "the paper's text")
  d.dispose()
  const [m0, m1, m3] = [model({ balanceLossWeight: 0 }), model({ balanceLossWeight: 0.02 }), model({ balanceLossWeight: 0.06 })]
  const [s0, s1, s3] = [await step(m0), await step(m1), await step(m3)]
  t.same(s0.aux, [0, 0], 'α = 0 disables it')
  t.ok(s1.aux.every((a) => a > 0.02 * 0.5), `aux losses ${s1.aux}: α·N·Σ f·P, about α when balanced`)
  // the aux values are α times the same statistics; float32 products
  s1.aux.forEach((a, i) => t.ok(Math.abs(s3.aux[i] - 3 * a) <= 1e-6 * s3.aux[i], `layer ${i}: aux triples with α`))
  t.equal(s0.loss, s1.loss, 'the cross-entropy does not depend on α')
  for (const l of [0, 1]) {
    const n = `transformer.blocks.${l}.expert_gate.weight`
    const g0 = s0.grads.get(n)!, g1 = s1.grads.get(n)!, g3 = s3.grads.get(n)!
    const d1 = g1.map((v, i) => v - g0[i]), d3 = g3.map((v, i) => v - g0[i])
    t.ok(maxAbs(d1) > 1e-4 * maxAbs(g0) + 1e-7, `${n}: the balance loss adds to the router's gradient (${maxAbs(d1)})`)
    // the aux gradient is linear in α; the subtraction cancels float32 rounding of the CE part (~1e-7 of |g0|)
    const err = maxAbs(d3.map((v, i) => v - 3 * d1[i]))
    t.ok(err <= 1e-3 * maxAbs(d3) + 4e-7 * maxAbs(g0), `${n}: its part triples with α (error ${err} of ${maxAbs(d3)})`)
  }
  for (const m of [m0, m1, m3]) m.dispose()
})

t.test('with accumulation the balance loss is the mean over the micro-batches', async (t) => {
  const m = model({ balanceLossWeight: 0.02 })
  const acc = await step(m, { accumulate: 2 })
  const halves = await Promise.all([0, 1].map(async (h) => {
    const out = m.forward(tensor(x.subarray(h * S, (h + 1) * S), [1, S], { dtype: 'int32' }), { train: true, noise: 'none', noiseStream: h } as never)
    const v = await Promise.all(out.auxLoss.map(async (a) => (await (a as Tensor).data())[0]))
    out.dispose()
    return v
  }))
  acc.aux.forEach((a, i) => t.ok(Math.abs(a - (halves[0][i] + halves[1][i]) / 2) <= 1e-6 * a, `layer ${i}: ${a}`))
  m.dispose()
})

t.test('trainStep drives the Gumbel temperature from the optimizer step', async (t) => {
  const m = model()
  const o = new AdamW(m.parameters(), m.gradients(), { lr: 0 }) // lr 0: the weights stay, so only τ differs between steps
  const depth = 'transformer.blocks.1.depth_predictor.weight'
  const viaStep = async (s: number) => {
    o.step = s
    const r = trainStep(m, o, tok(), y, { noise: 'none' })
    t.same(await r.status, { ok: true })
    const g = await m.gradients().get(depth)!.data()
    const loss = (await r.loss.data())[0]
    for (const z of [r.loss, r.gradNorm, ...r.auxLoss]) z.dispose()
    return { g, loss }
  }
  const manual = async (s: number) => {
    m.zeroGrad()
    const out = m.forward(tok(), { train: true, step: s, noise: 'none' })
    const l = m.loss(out, tensor(y, [B, S], { dtype: 'int32' }))
    m.backward(out)
    out.dispose()
    l.dispose()
    return m.gradients().get(depth)!.data()
  }
  const bits = (a: Float32Array) => Buffer.from(a.buffer)
  t.not(gumbelTemperature(0), gumbelTemperature(5000), 'the two steps have different temperatures')
  const a = await viaStep(0)
  const b = await viaStep(5000)
  t.ok(bits(a.g).equals(bits(await manual(0))), 'at step 0: the gradient of forward(step: 0)')
  t.ok(bits(b.g).equals(bits(await manual(5000))), 'at step 5000: the gradient of forward(step: 5000)')
  t.equal(a.loss, b.loss, 'the forward value does not depend on τ (noise off)')
  t.ok(maxAbs(a.g.map((v, i) => v - b.g[i])) > 1e-3 * maxAbs(a.g), 'but the loop head\'s gradient does')
  o.dispose()
  m.dispose()
})
