// errors belong to tensors: an op that fails marks what it writes, ops that read a failed tensor
// pass the failure on without working, and a wait rejects exactly when what it waits for failed,
// with the original error. every other wait, request and thread is unaffected.
import t from 'tap'
import { Worker } from 'worker_threads'
import * as path from 'path'
import {
  tensor, randn, matmul, device, embedding, crossEntropy, TransformerLM, TransformerLMOptions, AdamW, trainStep, Tensor, _native,
} from '../lib/index'

const tiny: TransformerLMOptions = { vocabSize: 16, dModel: 16, nLayers: 1, nHeads: 2, hidden: 32, maxSeqLen: 16, experts: 4, topK: 2, maxDepth: 2 }
const ids = (a: number[], shape: number[]) => tensor(Int32Array.from(a), shape, { dtype: 'int32' })
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

t.test('the reported case: a bad forward fails its own logits, never an innocent generate', async (t) => {
  const model = new TransformerLM({ ...tiny, seed: 3 })
  const alone = await model.generate([[1, 2]], { maxNewTokens: 5 })
  const g = model.generate([[1, 2]], { maxNewTokens: 5 })
  const bad = model.forward(ids([1, 99], [1, 2]))
  await new Promise((r) => setTimeout(r, 0))
  t.same(await g, alone, 'the concurrent generate resolves with the tokens it gives alone')
  await t.rejects(bad.logits.data(), { code: 'ERR_ARGUMENT', message: /op 'embedding_forward' failed: tokens: id 99 at position 1/ })
  for (const s of bad.stats) (s as { dispose?: () => void })?.dispose?.()
  bad.logits.dispose()
  model.dispose()
})

t.test('a failure flows to everything computed from it, with the original error, and nowhere else', async (t) => {
  const a = randn([6, 6], { seed: 1 })
  const b = randn([6, 6], { seed: 2 })
  _native._debugFail(a, 'first')
  _native._debugFail(b, 'second')
  const ab = matmul(a, b) // reads two failed inputs: the first one read is reported
  const bb = matmul(b, b)
  const abab = matmul(ab, ab)
  const c = randn([6, 6], { seed: 3 })
  const cc = matmul(c, c)
  await device('cpu').sync() // the device is fine: sync resolves
  await t.rejects(a.data(), { code: 'ERR_INTERNAL', message: /op 'debug_fail' failed: first/ })
  await t.rejects(b.data(), { code: 'ERR_INTERNAL', message: /second/ }, 'a second failure before any wait is not dropped')
  await t.rejects(ab.data(), { message: /first/ })
  await t.rejects(bb.data(), { message: /second/ })
  await t.rejects(abab.data(), { message: /first/ }, 'two ops downstream: still the original error')
  const cv = await c.data()
  const ccv = await cc.data()
  let ref = 0
  for (let k = 0; k < 6; k++) ref += cv[k] * cv[k * 6]
  t.ok(Math.abs(ccv[0] - ref) < 1e-5, 'an unrelated op ran and is right')
  // the failure stays until the tensor is overwritten whole
  await t.rejects(a.data(), { message: /first/ }, 'a failed tensor keeps failing its waits')
  a.rows(0, 3).fill_(1)
  await t.rejects(a.data(), { message: /first/ }, 'a partial overwrite does not make it valid')
  a.fill_(2)
  t.same([...(await a.data())], new Array(36).fill(2), 'a whole overwrite does')
})

t.test('an op that fails itself marks its outputs; the stream goes on', async (t) => {
  const w = randn([8, 4], { seed: 4 })
  const bad = embedding(w, ids([0, 8, 3], [3]))
  const good = embedding(w, ids([7, 0], [2]))
  const down = matmul(bad, w, { transposeB: true })
  await t.rejects(bad.data(), { code: 'ERR_ARGUMENT', message: /tokens: id 8 at position 1 is outside the vocabulary \[0, 8\)/ })
  await t.rejects(down.data(), { code: 'ERR_ARGUMENT', message: /op 'embedding_forward' failed/ })
  const wv = await w.data()
  t.same([...(await good.data())], [...wv.subarray(28, 32), ...wv.subarray(0, 4)])
  const logits = randn([3, 5], { seed: 5 })
  const { loss, lse } = crossEntropy(logits, ids([0, 5, 1], [3]))
  await t.rejects(loss.data(), { code: 'ERR_ARGUMENT', message: /op 'cross_entropy_forward' failed: .*5/ })
  await t.rejects(lse.data(), { code: 'ERR_ARGUMENT' })
})

t.test('32 concurrent requests, a few bad: each good one is right, each bad one gets its own error', async (t) => {
  const model = new TransformerLM({ ...tiny, seed: 7 })
  const prompt = (i: number) => [i % 16, (3 * i + 1) % 16, (5 * i + 2) % 16]
  const badAt = new Map([[5, 16], [11, 40], [23, 1000], [30, -1]])
  // references, one request at a time
  const ref: Float32Array[] = []
  for (let i = 0; i < 32; i++) {
    const out = model.forward(ids(prompt(i), [1, 3]))
    ref.push(await out.logits.data())
    out.logits.dispose()
  }
  const outs = Array.from({ length: 32 }, (_, i) => {
    const p = prompt(i)
    if (badAt.has(i)) p[2] = badAt.get(i)!
    return model.forward(ids(p, [1, 3]))
  })
  const settled = await Promise.allSettled(outs.map((o) => o.logits.data()))
  settled.forEach((s, i) => {
    if (badAt.has(i)) {
      t.equal(s.status, 'rejected', `request ${i} (bad) rejects`)
      if (s.status === 'rejected') t.match(s.reason, { code: 'ERR_ARGUMENT', message: new RegExp(`id ${badAt.get(i)} at position 2`) }, `request ${i}: its own id`)
    } else {
      t.equal(s.status, 'fulfilled', `request ${i} (good) resolves`)
      if (s.status === 'fulfilled') t.ok(bits(s.value).equals(bits(ref[i])), `request ${i}: the same logits as alone`)
    }
  })
  for (const o of outs) o.logits.dispose()
  model.dispose()
})

t.test('a worker thread\'s failing op never rejects a main-thread wait', async (t) => {
  const w = new Worker(path.join(__dirname, 'helpers', 'worker-fail.ts'))
  const a = randn([64, 64], { seed: 8 })
  const results: string[] = []
  const mainWaits = (async () => {
    for (let i = 0; i < 20; i++) {
      await device('cpu').sync()
      const c = matmul(a, a)
      await c.data()
      c.dispose()
      results.push('ok')
    }
  })()
  const fromWorker = await new Promise<string>((resolve, reject) => {
    w.once('message', resolve)
    w.once('error', reject)
  })
  await mainWaits
  await w.terminate()
  t.equal(fromWorker, 'ERR_ARGUMENT', 'the worker\'s own wait got its error')
  t.equal(results.length, 20, 'every main-thread wait resolved')
})

async function snapshotParams(m: TransformerLM): Promise<Buffer[]> {
  const out: Buffer[] = []
  for (const p of m.parameters().values()) out.push(bits(await p.data()))
  return out
}

for (const which of ['target', 'input'] as const) {
  t.test(`a training step with a bad ${which} id changes nothing: parameters, moments, step count`, async (t) => {
    const tokens = ids([1, 2, 3, 4, 5, 6, 7, 8], [2, 4])
    const targets = ids([2, 3, 4, 5, 6, 7, 8, 9], [2, 4])
    const badTokens = ids([1, 2, 3, 4, 5, 16, 7, 8], [2, 4])
    const badTargets = ids([2, 3, 4, 5, 6, 7, 8, 99], [2, 4])
    // A: good, bad, good. B: good, good. Equal bits at the end mean the bad step left the
    // parameters, both AdamW moments and the step count (bias correction) exactly as they were.
    const a = new TransformerLM({ ...tiny, seed: 11 })
    const b = new TransformerLM({ ...tiny, seed: 11 })
    const oa = new AdamW(a.parameters(), a.gradients(), { lr: 1e-2 })
    const ob = new AdamW(b.parameters(), b.gradients(), { lr: 1e-2 })
    const r1 = trainStep(a, oa, tokens, targets)
    t.same(await r1.status, { ok: true })
    trainStep(b, ob, tokens, targets)
    const before = await snapshotParams(a)
    const bad = which === 'target' ? trainStep(a, oa, tokens, badTargets) : trainStep(a, oa, badTokens, targets)
    const st = await bad.status
    t.equal(st.ok, false, 'the result says the step failed')
    if (!st.ok) t.match(st.error, { code: 'ERR_ARGUMENT', message: which === 'target' ? /targets: id 99/ : /tokens: id 16/ }, 'and why')
    await t.rejects(bad.loss.data(), { code: 'ERR_ARGUMENT' })
    t.equal(oa.step, 1, 'the failed step does not count')
    const after = await snapshotParams(a)
    t.ok(after.every((p, i) => p.equals(before[i])), 'every parameter is bitwise unchanged')
    const ra = trainStep(a, oa, tokens, targets)
    const rb = trainStep(b, ob, tokens, targets)
    t.same(await ra.status, { ok: true }, 'the next good step applies')
    t.equal(bits(await ra.loss.data()).equals(bits(await rb.loss.data())), true, 'and computes the same loss as a run without the bad step')
    const pa = await snapshotParams(a)
    const pb = await snapshotParams(b)
    t.ok(pa.every((p, i) => p.equals(pb[i])), 'and the same parameters: moments and step count were untouched')
    t.equal(oa.step, 2)
    for (const r of [r1, bad, ra, rb]) for (const x of [r.loss, r.gradNorm, ...r.auxLoss]) x.dispose()
    a.dispose()
    b.dispose()
  })
}

t.test('an out that overlaps an input is rejected and nothing changes', async (t) => {
  const a = randn([2, 2], { seed: 12 })
  const b = randn([2, 2], { seed: 13 })
  const av = await a.data()
  t.throws(() => matmul(a, b, { out: a }), { code: 'ERR_ARGUMENT', message: /out: overlaps the memory of input 'a'/ })
  t.throws(() => matmul(b, a, { out: a }), { code: 'ERR_ARGUMENT', message: /out: overlaps the memory of input 'b'/ })
  const big = randn([4, 2], { seed: 14 })
  t.throws(() => matmul(big.rows(0, 2), b, { out: big.rows(1, 3) }), { code: 'ERR_ARGUMENT' }, 'partial overlap of views')
  t.ok(bits(await a.data()).equals(bits(av)), 'a is unchanged')
  // views of one storage that do not overlap are fine
  const c = matmul(big.rows(0, 2), b, { out: big.rows(2, 4) })
  const bv = await big.data()
  const bbv = await b.data()
  t.ok(Math.abs(bv[4] - (bv[0] * bbv[0] + bv[1] * bbv[2])) < 1e-6)
  c.dispose()
})

t.test('tensor internals cannot be rewritten', async (t) => {
  const x = randn([2, 3], { seed: 15 })
  t.throws(() => {
    ;(x as unknown as { shape: number[] }).shape = [2 ** 62]
  }, TypeError)
  t.throws(() => {
    ;(x as unknown as { strides: number[] }).strides = [2 ** 40, 1]
  }, TypeError)
  t.throws(() => {
    ;(x as unknown as { offset: number }).offset = 1e9
  }, TypeError)
  t.same(x.shape, [2, 3])
  t.equal((await x.data()).length, 6)
  t.ok(Object.isFrozen(x) && x instanceof Tensor)
})
