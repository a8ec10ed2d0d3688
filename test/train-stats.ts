// trainStep's `stats: true`: the statistics of every micro-batch come back (loop counts in
// [1, L], one per token of the micro-batch) and keeping them changes nothing about the step.
import t from 'tap'
import { AdamW, TransformerLM, tensor, trainStep } from '../lib/index'

const CONFIG = { vocabSize: 31, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 8, experts: 4, topK: 2, maxDepth: 3, seed: 5 }
const B = 4, S = 5

function run(stats: boolean, accumulate: number, ffn: 'versatile' | 'dense' = 'versatile') {
  const model = new TransformerLM({ ...CONFIG, ffn })
  const opt = new AdamW(model.parameters(), model.gradients(), { lr: 1e-2 })
  const ids = Int32Array.from({ length: B * S }, (_, i) => (i * 7 + 3) % CONFIG.vocabSize)
  const targets = Int32Array.from({ length: B * S }, (_, i) => (i * 5 + 1) % CONFIG.vocabSize)
  const x = tensor(ids, [B, S], { dtype: 'int32' })
  const r = trainStep(model, opt, x, targets, { accumulate, stats })
  return { model, opt, x, r }
}

t.test('stats of each micro-batch and layer, and the same step as without them', async (t) => {
  for (const n of [1, 2]) {
    const a = run(true, n), b = run(false, n)
    t.ok((await a.r.status).ok)
    t.equal(b.r.stats, undefined, 'no stats unless asked')
    t.equal(a.r.stats!.length, n, `${n} micro-batches`)
    for (const micro of a.r.stats!) {
      t.equal(micro.length, CONFIG.nLayers)
      for (const s of micro) {
        const loops = await s!.loops.data()
        t.equal(loops.length, (B / n) * S, 'one loop count per token of the micro-batch')
        t.ok(loops.every((l) => l >= 1 && l <= CONFIG.maxDepth), `loops in [1, ${CONFIG.maxDepth}]: ${[...loops]}`)
        const lambda = await s!.lambda.data()
        lambda.forEach((l, i) => t.ok(Math.abs(l - (CONFIG.maxDepth - loops[i]) / CONFIG.maxDepth) < 1e-6, 'λ = (L − loops)/L'))
      }
    }
    const la = await a.r.loss.data(), lb = await b.r.loss.data()
    t.equal(la[0], lb[0], `accumulate ${n}: the same loss`)
    const wa = await a.model.parameters().get('transformer.wte.weight')!.data()
    const wb = await b.model.parameters().get('transformer.wte.weight')!.data()
    t.ok(Buffer.from(wa.buffer).equals(Buffer.from(wb.buffer)), 'the same update')
    for (const s of a.r.stats!.flat()) s?.dispose()
    for (const o of [a, b]) {
      for (const x of [o.x, o.r.loss, o.r.gradNorm, ...o.r.auxLoss]) x.dispose()
      o.opt.dispose()
      o.model.dispose()
    }
  }
})

t.test('a dense model reports no statistics per layer', async (t) => {
  const a = run(true, 1, 'dense')
  t.ok((await a.r.status).ok)
  t.same(a.r.stats, [[undefined, undefined]])
  for (const x of [a.x, a.r.loss, a.r.gradNorm, ...a.r.auxLoss]) x.dispose()
  a.opt.dispose()
  a.model.dispose()
})
