// TransformerBlock and TransformerLM: gradients against finite differences at tiny sizes, a few
// training steps, incremental decoding against the full forward, concurrent requests, bad input.
import t from 'tap'
import { Tensor, tensor, randn } from '../lib/index'
import { TransformerLM, TransformerLMOptions } from '../lib/nn/model'
import { AdamW, cosineLR, gumbelTemperature, trainStep } from '../lib/optim/adamw'
import { ids, tok, rng } from './helpers/data'


const base: TransformerLMOptions = { vocabSize: 23, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 12, seed: 3 }

// weights larger than the 0.02 init so every path moves the loss measurably in float32
async function scaleUp(m: TransformerLM, seed: number) {
  const sd: Record<string, Tensor> = {}
  let k = 0
  for (const [n, p] of m.parameters()) {
    const isNorm = /norm|ln_f/.test(n)
    sd[n] = randn(p.shape, { seed: seed * 100 + k++, std: isNorm ? 0.2 : 0.4, mean: isNorm ? 1 : 0 })
  }
  m.loadStateDict(sd)
}

async function objective(m: TransformerLM, x: Tensor, y: Tensor): Promise<number> {
  const out = m.forward(x, { train: true, noise: 'none' })
  const loss = m.loss(out, y)
  let v = (await loss.data())[0]
  for (const a of out.auxLoss) if (a instanceof Tensor) v += (await a.data())[0]
  return v
}

async function checkGrads(t: Tap.Test, m: TransformerLM, names: (n: string) => boolean, seed: number) {
  const B = 2, S = 5
  const x = tok(ids(B * S, m.config.vocabSize, seed), [B, S]), y = tok(ids(B * S, m.config.vocabSize, seed + 1), [B, S])
  m.zeroGrad()
  const out = m.forward(x, { train: true, noise: 'none' })
  m.loss(out, y)
  m.backward(out)
  const grads = m.gradients()
  const r = rng(seed + 2)
  let checked = 0
  for (const [name, p] of m.parameters()) {
    if (!names(name)) continue
    const g = await grads.get(name)!.data()
    const vals = await p.data()
    for (let c = 0; c < 3; c++) {
      const i = Math.floor(r() * p.size)
      const h = 1e-2
      const setAt = async (v: number) => {
        const w = vals.slice()
        w[i] = v
        p.copy_(tensor(w, p.shape))
      }
      await setAt(vals[i] + h)
      const lp = await objective(m, x, y)
      await setAt(vals[i] - h)
      const lm = await objective(m, x, y)
      await setAt(vals[i])
      const fd = (lp - lm) / (2 * h)
      // central differences of a float32 loss: O(h²) truncation plus ~1e-6/h rounding
      const ok = Math.abs(fd - g[i]) <= 2e-3 + 3e-2 * Math.abs(g[i])
      if (!ok) t.fail(`${name}[${i}]: analytic ${g[i]} finite difference ${fd}`)
      checked++
    }
  }
  t.ok(checked > 0, `${checked} coordinates checked`)
}

t.test('dense model: every gradient against finite differences', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'dense' })
  await scaleUp(m, 1)
  await checkGrads(t, m, () => true, 10)
})

t.test('versatile model with one loop (exactly differentiable): every gradient', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'versatile', experts: 4, topK: 2, maxDepth: 1, balanceLossWeight: 0.01 })
  await scaleUp(m, 2)
  await checkGrads(t, m, () => true, 20)
})

t.test('versatile model, four loops: true gradients downstream of the last straight-through head', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'versatile', experts: 4, topK: 2, maxDepth: 4 })
  await scaleUp(m, 3)
  // depth_predictor and everything upstream of it carry the straight-through estimate, not a derivative
  const last = `transformer.blocks.${base.nLayers - 1}.`
  const exact = new Set(['transformer.ln_f.weight', 'transformer.ff_out.weight', ...['ff_norm', 'ff_proj', 'ff_out', 'expert_gate'].map((n) => `${last}${n}.weight`)])
  await checkGrads(t, m, (n) => exact.has(n), 30)
  const g = m.gradients()
  const dp = await g.get(`${last}depth_predictor.weight`)!.data()
  t.ok(dp.some((v) => v !== 0), 'the loop head receives its straight-through gradient')
})

t.test('block gradient of the input against finite differences', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'dense' })
  await scaleUp(m, 4)
  const blk = m.blocks[0]
  const B = 2, S = 3, D = base.dModel
  const x0 = Float32Array.from({ length: B * S * D }, (_, i) => Math.sin(i * 0.7) * 1.3)
  const w = Float32Array.from({ length: B * S * D }, (_, i) => Math.cos(i * 0.3))
  const f = async (xv: Float32Array) => {
    const r = blk.forward(tensor(xv, [B * S, D]), B, S, { train: false })
    const y = await r.y.data()
    return y.reduce((s, v, i) => s + v * w[i], 0)
  }
  const r = blk.forward(tensor(x0, [B * S, D]), B, S, { train: true, noise: 'none' })
  const dx = await blk.backward(r.saved!, tensor(w, [B * S, D])).data()
  for (const i of [0, 7, 20, 47, B * S * D - 1]) {
    const h = 1e-2
    const xp = x0.slice(), xm = x0.slice()
    xp[i] += h
    xm[i] -= h
    const fd = ((await f(xp)) - (await f(xm))) / (2 * h)
    // float32 forward, central difference: see checkGrads
    t.ok(Math.abs(fd - dx[i]) <= 3e-3 + 3e-2 * Math.abs(dx[i]), `dx[${i}] analytic ${dx[i]} fd ${fd}`)
  }
})

t.test('a few training steps lower the loss (dense and versatile)', async (t) => {
  for (const ffn of ['dense', 'versatile'] as const) {
    const m = new TransformerLM({ ...base, ffn, seed: 5 })
    const B = 4, S = 8
    const x = ids(B * S, base.vocabSize, 40)
    const y = Int32Array.from(x, (v) => (v * 3 + 1) % base.vocabSize)
    const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
    const losses: number[] = []
    for (let i = 0; i < 25; i++) {
      const r = trainStep(m, opt, tok(x, [B, S]), tok(y, [B, S]), { schedule: { lr: 1e-2, warmupSteps: 3, totalSteps: 25 } })
      losses.push((await r.loss.data())[0])
    }
    t.ok(losses[24] < 0.5 * losses[0], `${ffn}: loss ${losses[0].toFixed(3)} -> ${losses[24].toFixed(3)}`)
    t.notOk(opt.decays('transformer.blocks.0.attn_norm.weight'), 'no decay on norm gains')
    t.ok(opt.decays('transformer.wte.weight'), 'decay on the embedding')
  }
})

t.test('schedules', async (t) => {
  const s = { lr: 1, warmupSteps: 10, totalSteps: 110 }
  t.equal(cosineLR(0, s), 0.1)
  t.equal(cosineLR(9, s), 1)
  t.ok(Math.abs(cosineLR(60, s) - 0.55) < 1e-12, 'half way: the mean of peak and floor')
  t.ok(Math.abs(cosineLR(110, s) - 0.1) < 1e-12, 'floor at 10%')
  t.equal(gumbelTemperature(0), 5)
  t.equal(gumbelTemperature(1e6), 0.1)
})

t.test('decoding with the paged cache equals the full forward; concurrent requests', async (t) => {
  const { KVPool } = await import('../lib/serve/pool')
  const { runStep } = await import('../lib/serve/step')
  for (const ffn of ['dense', 'versatile'] as const) {
    const m = new TransformerLM({ ...base, ffn, maxSeqLen: 20, seed: 9 })
    await scaleUp(m, 6)
    const B = 2, P = 3, N = 6
    const prompt = ids(B * P, base.vocabSize, 50)
    const full = ids(B * (P + N), base.vocabSize, 51)
    for (let b = 0; b < B; b++) for (let i = 0; i < P; i++) full[b * (P + N) + i] = prompt[b * P + i]
    const ref = await m.forward(tok(full, [B, P + N]), { train: false }).logits.data()
    const V = base.vocabSize
    // ragged chunks per sequence, so rows of different lengths share steps; blocks of 4 in shuffled order
    const chunks = [[3, 1, 1, 1, 1, 1, 1], [1, 2, 1, 1, 1, 1, 1, 1]]
    const pool = new KVPool(base.nLayers, base.dModel, 24, 4, m.device)
    const tables = [[5, 1, 3], [0, 4, 2]]
    const pos = [0, 0]
    let err = 0
    for (let step = 0; step < 8; step++) {
      const live = [0, 1].filter((b) => step < chunks[b].length)
      const rows = live.map((b) => ({ tokens: full.slice(b * (P + N) + pos[b], b * (P + N) + pos[b] + chunks[b][step]), start: pos[b], blocks: tables[b], sample: true }))
      const got = await runStep(m, pool, rows)!.data()
      live.forEach((b, r) => {
        pos[b] += chunks[b][step]
        for (let j = 0; j < V; j++) err = Math.max(err, Math.abs(got[r * V + j] - ref[(b * (P + N) + pos[b] - 1) * V + j]))
      })
    }
    pool.dispose()
    // the same float32 math on different row counts: GEMM blocking may round differently
    t.ok(err < 1e-4, `${ffn}: paged-cache logits within ${err} of the full forward`)
    const lastOnly = await m.forward(tok(full, [B, P + N]), { train: false, lastOnly: true }).logits.data()
    let e2 = 0
    for (let b = 0; b < B; b++) for (let j = 0; j < V; j++) e2 = Math.max(e2, Math.abs(lastOnly[b * V + j] - ref[(b * (P + N) + P + N - 1) * V + j]))
    // the head GEMM on 2 rows instead of 18: same products, possibly another blocking
    t.ok(e2 < 1e-5, `${ffn}: lastOnly logits equal the full forward's last row (${e2})`)
    // greedy generation agrees with argmax of the full forward over its own output
    const [g] = await m.generate([Array.from(prompt.subarray(0, P))], { maxNewTokens: N })
    const seq = Int32Array.from([...prompt.subarray(0, P), ...g])
    const lf = await m.forward(tok(seq, [1, P + N]), { train: false }).logits.data()
    for (let s = P - 1; s < P + N - 1; s++) {
      let best = 0
      for (let j = 1; j < V; j++) if (lf[s * V + j] > lf[s * V + best]) best = j
      if (best !== seq[s + 1]) t.fail(`${ffn}: greedy token ${s + 1} is ${seq[s + 1]}, the full forward's argmax ${best}`)
    }
    // a batch of prompts decodes each as if alone
    const pair = await m.generate([[1, 2, 3], [4, 5, 6]], { maxNewTokens: 4 })
    const single = [(await m.generate([[1, 2, 3]], { maxNewTokens: 4 }))[0], (await m.generate([[4, 5, 6]], { maxNewTokens: 4 }))[0]]
    t.same(pair.map((x) => Array.from(x)), single.map((x) => Array.from(x)), `${ffn}: batched prompts decode as single ones`)
    // concurrent requests: same results as one at a time
    const reqs = [[1, 2, 3], [4, 5, 6], [7, 8, 9]].map((p, i) => ({ p, o: { maxNewTokens: 5, temperature: 0.8, topK: 5, seed: i } }))
    const alone = []
    for (const r of reqs) alone.push((await m.generate([r.p], r.o))[0])
    const together = await Promise.all(reqs.map((r) => m.generate([r.p], r.o)))
    t.same(together.map((x) => Array.from(x[0])), alone.map((x) => Array.from(x)), `${ffn}: concurrent requests do not interfere`)
  }
})

t.test('bad input gives clear errors with codes', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'versatile' })
  const out = m.forward(tok(Int32Array.from([1, 2, 23, 4]), [1, 4]), { train: false })
  await t.rejects(out.logits.data(), { code: 'ERR_ARGUMENT', message: /id 23 at position 2 is outside the vocabulary \[0, 23\)/ })
  t.throws(() => m.forward(tok(new Int32Array(0), [0, 4])), { code: 'ERR_SHAPE', message: /batch is empty/ })
  t.throws(() => m.forward(tok(new Int32Array(13), [1, 13])), { code: 'ERR_SHAPE', message: /sequence length 13 exceeds maxSeqLen 12/ })
  t.throws(() => m.forward(tensor(new Float32Array(4), [1, 4])), { code: 'ERR_DTYPE' })
  t.throws(() => m.forward(tok(new Int32Array(4), [4])), { code: 'ERR_SHAPE' })
  await t.rejects(m.generate([[1, 99]]), { code: 'ERR_ARGUMENT', message: /token id 99/ })
  await t.rejects(m.generate([[1, 2]], { maxNewTokens: 11 }), { code: 'ERR_SHAPE', message: /exceed maxSeqLen 12/ })
  t.throws(() => new TransformerLM({ ...base, nHeads: 3 }), { code: 'ERR_ARGUMENT' })
  t.throws(() => new TransformerLM({ ...base, ffn: 'wide' as never }), { code: 'ERR_ARGUMENT' })
  // the stream stays usable after a rejected op
  const ok = m.forward(tok(Int32Array.from([1, 2]), [1, 2]), { train: false })
  t.equal((await ok.logits.data()).length, 2 * 23)
})

t.test('sampling: seeded reproducibility (the rule itself: test/serve-sample.ts)', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'dense', seed: 2 })
  const a = await m.generate([[1, 2]], { maxNewTokens: 6, temperature: 1.5, topK: 8, seed: 5 })
  const b = await m.generate([[1, 2]], { maxNewTokens: 6, temperature: 1.5, topK: 8, seed: 5 })
  t.same(Array.from(a[0]), Array.from(b[0]), 'same seed, same tokens')
})
