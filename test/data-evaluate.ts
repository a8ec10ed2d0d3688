// evaluate(): the mean loss over the dataset's first batches equals the loss computed by hand
// (crossEntropy on the same batches, and a float64 log-softmax of the logits), and memory returns to baseline.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { TokenDataset, TransformerLM, crossEntropy, device, evaluate, tensor } from '../lib/index'
import { randomIds, writeBin } from './helpers/token-files'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-eval-'))
t.teardown(() => fs.rmSync(dir, { recursive: true }))
const V = 48
const cfg = { vocabSize: V, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 16, experts: 4, topK: 2, maxDepth: 3, seed: 3 }

for (const ffn of ['versatile', 'dense'] as const) {
  t.test(`${ffn}: loss, perplexity and tokens match the hand computation`, async (t) => {
    const ids = randomIds(700, V, 21)
    writeBin(path.join(dir, `${ffn}.bin`), ids)
    const ds = TokenDataset.open(path.join(dir, `${ffn}.bin`), { vocabSize: V })
    const model = new TransformerLM({ ...cfg, ffn })
    const B = 3, S = 10, batches = 5
    const cpu = device('cpu')
    await cpu.sync()
    const base = cpu.memory().live
    const r = await evaluate(model, ds, { batches, batchSize: B, seqLen: S })
    await cpu.sync()
    t.equal(cpu.memory().live, base, 'memory back to baseline')

    // by hand: windows in stream order, the model's inference forward, crossEntropy per batch; and float64 from the logits
    let sumCE = 0, sum64 = 0
    for (let b = 0; b < batches; b++) {
      const x = new Int32Array(B * S), y = new Int32Array(B * S)
      for (let i = 0; i < B; i++)
        for (let s = 0; s < S; s++) {
          const start = (b * B + i) * S
          x[i * S + s] = ids[start + s]
          y[i * S + s] = ids[start + s + 1]
        }
      // everything made here is disposed: left to the garbage collector, it would be freed during the
      // next subtest and move that subtest's memory baseline
      const xt = tensor(x, [B, S]), yt = tensor(y, [B * S])
      const out = model.forward(xt)
      const logits = out.logits.reshape([B * S, V])
      const { loss, lse } = crossEntropy(logits, yt)
      sumCE += (await loss.data())[0] * B * S
      const l = await logits.data()
      for (let k = 0; k < B * S; k++) {
        let m = -Infinity
        for (let v = 0; v < V; v++) m = Math.max(m, l[k * V + v])
        let z = 0
        for (let v = 0; v < V; v++) z += Math.exp(l[k * V + v] - m)
        sum64 += m + Math.log(z) - l[k * V + y[k]]
      }
      for (const z of [xt, yt, logits, loss, lse]) z.dispose()
      out.dispose()
    }
    t.equal(r.tokens, batches * B * S)
    // float32 sums of 30 terms per batch against the same op: a few ulps of ~log(48)
    t.ok(Math.abs(r.loss - sumCE / r.tokens) < 1e-6, `loss ${r.loss} vs crossEntropy by hand ${sumCE / r.tokens}`)
    // float64 log-softmax of the float32 logits: float32 rounding of the op's sums only
    t.ok(Math.abs(r.loss - sum64 / r.tokens) < 1e-5, `loss ${r.loss} vs float64 ${sum64 / r.tokens}`)
    t.ok(Math.abs(r.perplexity - Math.exp(r.loss)) < 1e-9 * r.perplexity)
    t.ok(r.loss > 3 && r.loss < 5, 'an untrained model is near log(48) = 3.87')

    // the default covers every whole batch; the same call gives the same numbers
    const all = await evaluate(model, ds, { batchSize: B, seqLen: S })
    t.equal(all.tokens, Math.floor(Math.floor(699 / S) / B) * B * S)
    t.same(await evaluate(model, ds, { batches, batchSize: B, seqLen: S }), r, 'deterministic')
    await t.rejects(evaluate(model, ds, { batches: 100, batchSize: B, seqLen: S }), { code: 'ERR_ARGUMENT', message: /opts\.batches: the dataset holds 23 batches/ })
    await t.rejects(evaluate(model, ds, { batchSize: B, seqLen: 17 }), { code: 'ERR_ARGUMENT', message: /opts\.seqLen: 17 exceeds the model's maxSeqLen 16/ })
    const small = new TransformerLM({ ...cfg, ffn, vocabSize: 20 })
    await t.rejects(evaluate(small, ds, { batchSize: B, seqLen: S }), { code: 'ERR_ARGUMENT', message: /dataset: id \d+ in batch 0 is >= the model's vocabSize 20/ })
    await cpu.sync()
    small.dispose()
    ds.close()
    model.dispose()
  })
}
