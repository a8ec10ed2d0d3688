// TransformerLM with the paper's baselines as its FFN (ffn: 'moe' and 'loops'): parameter names and
// shapes, every gradient against finite differences of the model's loss, a few training steps,
// save / fromFile round trips and the config a checkpoint records.
import t, { Test } from 'tap'
import path from 'path'
import { Tensor, loadSafetensors, randn, tensor } from '../lib/index'
import { TransformerLM, TransformerLMOptions } from '../lib/nn/model'
import { AdamW, trainStep } from '../lib/optim/adamw'
import { saveSafetensors } from '../lib/io/safetensors'
import { ids, tok, rng } from './helpers/data'

const base: TransformerLMOptions = { vocabSize: 23, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 12, seed: 3 }
const dir = t.testdir({})

// weights larger than the 0.02 init so every path moves the loss measurably in float32
function scaleUp(m: TransformerLM, seed: number) {
  const sd: Record<string, Tensor> = {}
  let k = 0
  for (const [n, p] of m.parameters()) {
    const isNorm = /norm|ln_f/.test(n)
    sd[n] = randn(p.shape, { seed: seed * 100 + k++, std: isNorm ? 0.2 : 0.4, mean: isNorm ? 1 : 0 })
  }
  m.loadStateDict(sd)
}

async function objective(m: TransformerLM, x: Tensor, y: Tensor): Promise<number> {
  const out = m.forward(x, { train: true })
  let v = (await m.loss(out, y).data())[0]
  for (const a of out.auxLoss) if (a instanceof Tensor) v += (await a.data())[0]
  out.dispose()
  return v
}

async function checkGrads(t: Test, m: TransformerLM, seed: number) {
  const B = 2, S = 5
  const x = tok(ids(B * S, m.config.vocabSize, seed), [B, S]), y = tok(ids(B * S, m.config.vocabSize, seed + 1), [B, S])
  m.zeroGrad()
  const out = m.forward(x, { train: true })
  m.loss(out, y)
  m.backward(out)
  const grads = m.gradients()
  const r = rng(seed + 2)
  let checked = 0, failed = 0
  for (const [name, p] of m.parameters()) {
    const g = await grads.get(name)!.data()
    const vals = await p.data()
    for (let c = 0; c < 3; c++) {
      const i = Math.floor(r() * p.size)
      const h = 1e-2
      const setAt = (v: number) => {
        const w = vals.slice()
        w[i] = v
        p.copy_(tensor(w, p.shape))
      }
      setAt(vals[i] + h)
      const lp = await objective(m, x, y)
      setAt(vals[i] - h)
      const lm = await objective(m, x, y)
      setAt(vals[i])
      const fd = (lp - lm) / (2 * h)
      // central differences of a float32 loss: O(h²) truncation plus ~1e-6/h rounding
      if (!(Math.abs(fd - g[i]) <= 2e-3 + 3e-2 * Math.abs(g[i]))) {
        t.fail(`${name}[${i}]: analytic ${g[i]} finite difference ${fd}`)
        failed++
      }
      checked++
    }
  }
  t.ok(checked > 0 && failed === 0, `${checked} coordinates checked, every parameter`)
}

t.test('moe model: names, shapes and every gradient', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'moe', experts: 4, topK: 2, balanceLossWeight: 0.01 })
  const p = m.parameters()
  t.same(p.get('transformer.blocks.0.ff_proj.weight')!.shape, [2 * 4 * 16, 16], 'E = hidden / topK = 16: four stacked experts')
  t.same(p.get('transformer.blocks.1.ff_out.weight')!.shape, [16, 4 * 16])
  t.same(p.get('transformer.blocks.0.expert_gate.weight')!.shape, [4, 16])
  t.notOk(p.has('transformer.blocks.0.depth_predictor.weight'), 'no loop head')
  t.equal(m.config.expertHidden, 16)
  t.equal(m.config.loops, undefined)
  scaleUp(m, 1)
  await checkGrads(t, m, 10)
  const out = m.forward(tok(ids(6, 23, 5), [1, 6]))
  const st = out.stats[0]!
  t.ok(st && !('loops' in st), 'routing stats without loops')
  const counts = Array.from(await st.expertCounts.data())
  t.equal(counts.reduce((a, b) => a + b, 0), 6 * 2, 'every (token, slot) pair counted once')
  out.dispose()
  m.dispose()
})

t.test('k-loop model: names, shapes and every gradient', async (t) => {
  const m = new TransformerLM({ ...base, ffn: 'loops', loops: 3 })
  const names = [...m.parameters().keys()].filter((n) => n.startsWith('transformer.blocks.0.ff'))
  t.same(names, ['transformer.blocks.0.ff_norm.weight', 'transformer.blocks.0.ff_proj.weight', 'transformer.blocks.0.ff_out.weight'], "DenseFFN's names")
  t.equal(m.config.loops, 3)
  t.equal(m.config.expertHidden, undefined)
  t.equal(m.numParameters(), new TransformerLM({ ...base, ffn: 'dense' }).numParameters(), 'as many parameters as the dense model')
  scaleUp(m, 2)
  await checkGrads(t, m, 20)
  const out = m.forward(tok(ids(4, 23, 6), [1, 4]))
  t.same(out.stats, [undefined, undefined], 'no routing to report')
  t.same(out.auxLoss, [undefined, undefined])
  m.dispose()
})

t.test('a few training steps lower the loss (moe and loops)', async (t) => {
  for (const ffn of ['moe', 'loops'] as const) {
    const m = new TransformerLM({ ...base, ffn, experts: 4, topK: 2, loops: 2 })
    const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
    const B = 4, S = 8
    const x = ids(B * S, 23, 7), y = Int32Array.from(x, (v) => (v * 7 + 3) % 23)
    const losses: number[] = []
    for (let s = 0; s < 25; s++) {
      const r = trainStep(m, opt, tok(x, [B, S]), tok(y, [B, S]), { schedule: { lr: 1e-2, warmupSteps: 3, totalSteps: 25 } })
      losses.push((await r.loss.data())[0])
      if (ffn === 'moe' && s === 0) t.equal(r.auxLoss.length, 2, 'one balance loss per layer')
      for (const a of [r.loss, ...r.auxLoss]) a.dispose()
    }
    t.ok(losses[24] < 0.5 * losses[0], `${ffn}: loss ${losses[0].toFixed(3)} -> ${losses[24].toFixed(3)}`)
    opt.dispose()
    m.dispose()
  }
})

t.test('save and fromFile round trips; the config records each kind', async (t) => {
  const toks = tok(Int32Array.from([1, 5, 7, 3, 9]), [1, 5])
  for (const o of [{ ffn: 'moe', experts: 3, topK: 1, expertHidden: 8 }, { ffn: 'loops', loops: 2 }] as Partial<TransformerLMOptions>[]) {
    const a = new TransformerLM({ ...base, ...o, seed: 11 })
    const file = path.join(dir, `${o.ffn}.safetensors`)
    await a.save(file)
    const b = await TransformerLM.fromFile(file)
    t.same(b.config, a.config, `${o.ffn}: the same config`)
    t.same(Array.from(await b.forward(toks).logits.data()), Array.from(await a.forward(toks).logits.data()), `${o.ffn}: the same logits`)
    const cfg = JSON.parse((await loadSafetensors(file)).metadata['versatile-ffn.config'])
    t.equal(cfg.loops, o.ffn === 'loops' ? 2 : null, `${o.ffn}: loops recorded only for a k-loop model`)
    t.equal(cfg.expertHidden, o.ffn === 'moe' ? 8 : null, `${o.ffn}: expertHidden recorded only for a routed model`)
    // a config that names a setting the kind does not use is refused, as for dense models
    const { tensors } = await loadSafetensors(file)
    const sd: Record<string, Tensor> = {}
    for (const [n, st] of tensors) sd[n] = tensor(st.data, st.shape)
    const bad = path.join(dir, `${o.ffn}-bad.safetensors`)
    const wrong = { ...cfg, ...(o.ffn === 'moe' ? { loops: 2 } : { expertHidden: 8 }) }
    await saveSafetensors(bad, sd, { metadata: { 'versatile-ffn.config': JSON.stringify(wrong) } })
    await t.rejects(TransformerLM.fromFile(bad), { code: 'ERR_ARGUMENT', message: /must be null for a model with ffn/ })
    a.dispose()
    b.dispose()
  }
})

t.test('a checkpoint written before the loops key existed still loads', async (t) => {
  const a = new TransformerLM({ ...base, ffn: 'dense', seed: 12 })
  const file = path.join(dir, 'old.safetensors')
  await a.save(file)
  const { tensors, metadata } = await loadSafetensors(file)
  const cfg = JSON.parse(metadata['versatile-ffn.config'])
  delete cfg.loops
  const sd: Record<string, Tensor> = {}
  for (const [n, st] of tensors) sd[n] = tensor(st.data, st.shape)
  const old = path.join(dir, 'old2.safetensors')
  await saveSafetensors(old, sd, { metadata: { 'versatile-ffn.config': JSON.stringify(cfg) } })
  const b = await TransformerLM.fromFile(old)
  t.same(b.config, a.config)
})

t.test('bad baseline options are refused before anything is built', async (t) => {
  t.throws(() => new TransformerLM({ ...base, ffn: 'moe', experts: 2, topK: 3 }), { code: 'ERR_ARGUMENT', message: /^topK: / })
  t.throws(() => new TransformerLM({ ...base, ffn: 'loops', loops: 0 }), { code: 'ERR_ARGUMENT', message: /loops/ })
  t.throws(() => new TransformerLM({ ...base, ffn: 'mixture' as never }), { code: 'ERR_ARGUMENT', message: /ffn/ })
})

t.test('greedy generation through the engine equals argmax of the full forward (moe and loops)', async (t) => {
  for (const o of [{ ffn: 'moe', experts: 4, topK: 2 }, { ffn: 'loops', loops: 2 }] as Partial<TransformerLMOptions>[]) {
    const m = new TransformerLM({ ...base, ...o, seed: 13 })
    scaleUp(m, 7)
    const prompt = [3, 1, 4, 1, 5]
    const [got] = await m.generate([prompt], { maxNewTokens: 4 })
    const seq = [...prompt]
    for (let i = 0; i < 4; i++) {
      const out = m.forward(tok(Int32Array.from(seq), [1, seq.length]))
      const logits = await out.logits.data()
      const last = logits.subarray((seq.length - 1) * base.vocabSize)
      seq.push(last.indexOf(Math.max(...last)))
      out.dispose()
    }
    t.same(Array.from(got), seq.slice(prompt.length), `${o.ffn}: the same tokens`)
    m.dispose()
  }
})
