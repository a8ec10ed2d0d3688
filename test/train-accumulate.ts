// Gradient accumulation: an accumulated step against the unsplit step on the same batch (dense and
// VersatileFFN, with and without ignored targets), its atomicity, and bad input.
import t from 'tap'
import { AdamW, Tensor, TransformerLM, TransformerLMOptions, device, randn, tensor, trainStep } from '../lib/index'
import { ids } from './helpers/data'

const tiny: TransformerLMOptions = { vocabSize: 19, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 8, experts: 4, topK: 2, maxDepth: 3, seed: 5 }
const B = 4, S = 6
const tok = (a: Int32Array) => tensor(a, [B, S], { dtype: 'int32' })
// ignored targets spread unevenly: sequence 0 keeps 1 of 6, sequence 3 keeps all, so micro-batches count differently
function withIgnored(a: Int32Array): Int32Array {
  const out = a.slice()
  for (let i = 1; i < S; i++) out[i] = -100
  out[S + 2] = -100
  out[2 * S + 4] = -100
  return out
}
const maxAbs = (a: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i])); return m }
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m }

// weights larger than the 0.02 init, so per-token losses and routing differ measurably
function scaleUp(m: TransformerLM, seed: number): TransformerLM {
  const sd: Record<string, Tensor> = {}
  let k = 0
  for (const [n, p] of m.parameters()) {
    const isNorm = /norm|ln_f/.test(n)
    sd[n] = randn(p.shape, { seed: seed * 100 + k++, std: isNorm ? 0.2 : 0.4, mean: isNorm ? 1 : 0 })
  }
  m.loadStateDict(sd)
  for (const v of Object.values(sd)) v.dispose()
  return m
}

async function snapshot(m: Map<string, Tensor>): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>()
  for (const [n, p] of m) out.set(n, await p.data())
  return out
}

for (const ffn of ['dense', 'versatile'] as const) {
  for (const ignored of [false, true]) {
    t.test(`${ffn}, ${ignored ? 'with' : 'without'} ignored targets: accumulate 2 and 4 equal the unsplit step`, async (t) => {
      // balance loss off: its f and P are per micro-batch statistics, so only its absence makes the two steps the same function
      const cfg = { ...tiny, ffn, balanceLossWeight: ffn === 'versatile' ? 0 : undefined }
      const x = ids(B * S, tiny.vocabSize, 11)
      const y0 = ids(B * S, tiny.vocabSize, 12)
      const y = ignored ? withIgnored(y0) : y0
      const ref = scaleUp(new TransformerLM(cfg), 7)
      const oref = new AdamW(ref.parameters(), ref.gradients(), { lr: 1e-2 })
      const r = trainStep(ref, oref, tok(x), y, { noise: 'none' })
      t.same(await r.status, { ok: true })
      const refLoss = (await r.loss.data())[0]
      const refNorm = await r.gradNorm.data()
      const refGrads = await snapshot(ref.gradients())
      const refParams = await snapshot(ref.parameters())
      for (const n of [2, 4]) {
        const m = scaleUp(new TransformerLM(cfg), 7)
        const o = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
        const a = trainStep(m, o, tok(x), y, { noise: 'none', accumulate: n })
        t.same(await a.status, { ok: true })
        t.equal(o.step, 1, 'one update for the whole batch')
        // float32 sums regrouped per micro-batch: a few ulps of the values summed
        const loss = (await a.loss.data())[0]
        t.ok(Math.abs(loss - refLoss) <= 1e-6 * Math.abs(refLoss), `accumulate ${n}: loss ${loss} vs ${refLoss}`)
        const norm = await a.gradNorm.data()
        t.ok(Math.abs(norm[0] - refNorm[0]) <= 1e-5 * refNorm[0], `accumulate ${n}: grad norm ${norm[0]} vs ${refNorm[0]}`)
        // each gradient is a sum over tokens regrouped into micro-batches: error ~1e-7 of its largest entry; 1e-5 leaves room
        const grads = await snapshot(m.gradients())
        const bad: string[] = []
        for (const [name, g] of refGrads) if (maxDiff(grads.get(name)!, g) > 1e-5 * maxAbs(g) + 1e-9) bad.push(`${name}: ${maxDiff(grads.get(name)!, g)} of ${maxAbs(g)}`)
        t.same(bad, [], `accumulate ${n}: every gradient matches`)
        // AdamW's first step moves p by lr·f(c·g), f(u) = u/(|u| + eps), c the clip coefficient: allow what
        // the gradient differences checked above account for through f, plus float32 rounding of p
        const params = await snapshot(m.parameters())
        const f = (u: number) => u / (Math.abs(u) + 1e-8)
        let far = 0, total = 0
        for (const [name, p] of refParams) {
          const q = params.get(name)!, g = refGrads.get(name)!, h = grads.get(name)!
          for (let i = 0; i < p.length; i++) {
            total++
            if (Math.abs(p[i] - q[i]) > 1e-2 * Math.abs(f(refNorm[1] * g[i]) - f(norm[1] * h[i])) + 1e-6) far++
          }
        }
        t.equal(far, 0, `accumulate ${n}: every parameter after the update matches (${total} compared)`)
        for (const z of [a.loss, a.gradNorm, ...a.auxLoss]) z.dispose()
        o.dispose()
        m.dispose()
      }
      if (ignored) {
        // the plain mean of the micro-batch losses is not the full-batch loss here, so the weighting is tested
        const m = scaleUp(new TransformerLM(cfg), 7)
        const halves = await Promise.all([0, 1].map(async (h) => {
          const out = m.forward(tensor(x.subarray(h * 2 * S, (h + 1) * 2 * S), [2, S], { dtype: 'int32' }), { train: true, noise: 'none' })
          const l = m.loss(out, tensor(y.subarray(h * 2 * S, (h + 1) * 2 * S), [2, S], { dtype: 'int32' }))
          const v = (await l.data())[0]
          out.dispose()
          l.dispose()
          return v
        }))
        t.ok(Math.abs((halves[0] + halves[1]) / 2 - refLoss) > 1e-3 * refLoss, 'an unweighted mean would differ')
        m.dispose()
      }
      for (const z of [r.loss, r.gradNorm, ...r.auxLoss]) z.dispose()
      oref.dispose()
      ref.dispose()
    })
  }
}

t.test('a bad id in any micro-batch fails the whole step and changes nothing', async (t) => {
  for (const where of ['token', 'target'] as const) {
    const m = new TransformerLM(tiny)
    const o = new AdamW(m.parameters(), m.gradients())
    const x = ids(B * S, tiny.vocabSize, 21)
    const y = ids(B * S, tiny.vocabSize, 22)
    t.same(await trainStep(m, o, tok(x), y, { accumulate: 2 }).status, { ok: true })
    const before = await snapshot(m.parameters())
    const st = o.stateDict()
    const mBefore = await Promise.all(Object.values(st.m).map((v) => (v as Tensor).data()))
    const bx = x.slice(), by = y.slice()
    // the last micro-batch only: the first ones have already accumulated when it fails
    if (where === 'token') bx[B * S - 1] = 99
    else by[B * S - 2] = 99
    const bad = trainStep(m, o, tok(bx), by, { accumulate: 2 })
    const s = await bad.status
    t.equal(s.ok, false, `a bad ${where}: the step fails`)
    if (!s.ok) t.match(s.error, { code: 'ERR_ARGUMENT', message: where === 'token' ? /tokens: id 99/ : /targets: id 99/ })
    await t.rejects(bad.loss.data(), { code: 'ERR_ARGUMENT' }, 'and so does its loss')
    t.equal(o.step, 1, 'the step count is unchanged')
    const after = await snapshot(m.parameters())
    t.ok([...before].every(([n, p]) => Buffer.from(p.buffer).equals(Buffer.from(after.get(n)!.buffer))), 'every parameter is bitwise unchanged')
    const mAfter = await Promise.all(Object.values(o.stateDict().m).map((v) => (v as Tensor).data()))
    t.ok(mBefore.every((v, i) => Buffer.from(v.buffer).equals(Buffer.from(mAfter[i].buffer))), 'every moment is bitwise unchanged')
    o.dispose()
    m.dispose()
  }
})

t.test('micro-batches draw their own Gumbel noise', async (t) => {
  const m = new TransformerLM(tiny)
  const x = tensor(ids(B * S, tiny.vocabSize, 31), [B, S], { dtype: 'int32' })
  const run = async (noiseStream?: number) => {
    const out = m.forward(x, { train: true, step: 3, noise: 'gumbel', noiseStream } as never)
    const v = await out.logits.data()
    out.dispose()
    return v
  }
  const [a, a0, b] = [await run(), await run(0), await run(1)]
  t.same(Buffer.from(a0.buffer).equals(Buffer.from(a.buffer)), true, 'the first micro-batch draws the step\'s own noise')
  t.ok(maxDiff(a, b) > 1e-4, 'another micro-batch draws different noise')
  m.dispose()
})

t.test('bad accumulate and targets are refused before anything changes', async (t) => {
  const m = new TransformerLM(tiny)
  const o = new AdamW(m.parameters(), m.gradients())
  const x = tok(ids(B * S, tiny.vocabSize, 41))
  const y = ids(B * S, tiny.vocabSize, 42)
  t.same(await trainStep(m, o, x, y).status, { ok: true })
  const before = await snapshot(m.parameters())
  const yt = tok(y)
  const live = device('cpu').memory().live
  t.throws(() => trainStep(m, o, x, y, { accumulate: 3 }), { code: 'ERR_ARGUMENT', message: /accumulate: expected a divisor of the batch size 4, got 3/ })
  t.throws(() => trainStep(m, o, x, y, { accumulate: 0 }), { code: 'ERR_ARGUMENT', message: /accumulate: / })
  t.throws(() => trainStep(m, o, x, y, { accumulate: 8 }), { code: 'ERR_ARGUMENT', message: /accumulate: expected a divisor/ })
  t.throws(() => trainStep(m, o, x, yt, { accumulate: 2 }), { code: 'ERR_ARGUMENT', message: /targets: accumulate > 1 needs the targets as an Int32Array/ })
  t.throws(() => trainStep(m, o, x, y.subarray(1), { accumulate: 2 }), { code: 'ERR_SHAPE', message: /targets: expected 24 values/ })
  t.equal(device('cpu').memory().live, live, 'nothing allocated')
  t.equal(o.step, 1)
  const after = await snapshot(m.parameters())
  t.ok([...before].every(([n, p]) => Buffer.from(p.buffer).equals(Buffer.from(after.get(n)!.buffer))), 'no parameter changed')
  o.dispose()
  m.dispose()
})
