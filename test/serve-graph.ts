// Recorded steps: a recording replays its ops on new input values like the ops queued one by one
// (checked against a float64 reference), errors inside a replay stay with the tensors the failing
// op writes and are gone on the next good replay, disposed inputs and unreplayable work are
// refused, and the engine's replayed decode step equals the op-by-op one bit for bit (greedy and
// seeded sampling, ragged prompts, requests joining and leaving), with memory back to baseline.
import t, { Test } from 'tap'
import { GenerationEngine, RequestOptions, TransformerLM, VffnError, _native, device, kvWrite, matmul, pagedAttention, tensor } from '../lib/index'
import { mulberry32 } from '../lib/random'
import { DecodeGraph } from '../lib/serve/graph'
import { KVPool } from '../lib/serve/pool'
import { sampleRows } from '../lib/serve/kernels'
import { StepRow, runStep } from '../lib/serve/step'
import type { Tensor } from '../lib/tensor'

const live = () => device('cpu').memory().live
const settle = async () => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  await new Promise((r) => setImmediate(r))
  gc?.()
  await device('cpu').sync()
}
const rand = (n: number, seed: number) => {
  const r = mulberry32(seed)
  return Float32Array.from({ length: n }, () => r() * 2 - 1)
}
// 'resolved', or the error's code and the op that failed (waits say "op 'name' failed: ...")
const code = async (p: Promise<unknown>) =>
  p.then(() => 'resolved', (e: VffnError) => `${e.code} ${/^op '(\w+)'/.exec(e.message)?.[1] ?? ''}`.trim())

// one small step: y = x W^T, its rows written into the pools at `slots`, then attention of y
// (one query per sequence) over each sequence's keys
const NB = 4, BS = 4, D = 4, B = 2
function stepParts() {
  const w = tensor(rand(D * 3, 1), [D, 3])
  const x = tensor(new Float32Array(B * 3), [B, 3])
  const slots = tensor(new Int32Array(B), [B], { dtype: 'int32' })
  const table = tensor(Int32Array.of(0, 1, 2, 3), [B, 2], { dtype: 'int32' })
  const lens = tensor(Int32Array.of(3, 5), [B], { dtype: 'int32' })
  const kP = tensor(rand(NB * BS * D, 2), [NB, BS, D]), vP = tensor(rand(NB * BS * D, 3), [NB, BS, D])
  let y!: Tensor, o!: Tensor
  const g = _native.graphRecord(() => {
    y = matmul(x, w, { transposeB: true })
    kvWrite(kP, vP, y, y, slots)
    const q = y.reshape([B, 1, D])
    o = pagedAttention(q, kP, vP, table, lens, 1)
    q.dispose()
  })
  return { w, x, slots, table, lens, kP, vP, g, y: () => y, o: () => o, all: () => [w, x, slots, table, lens, kP, vP, y, o] }
}

// float64: attention of query y[b] over keys 0..lens[b]-1 of sequence b (table [[0, 1], [2, 3]])
function attentionRef(k: Float32Array, v: Float32Array, q: Float64Array, b: number, len: number): number[] {
  const table = [[0, 1], [2, 3]][b]
  const slot = (j: number) => table[Math.floor(j / BS)] * BS + (j % BS)
  const s = Array.from({ length: len }, (_, j) => {
    let d = 0
    for (let c = 0; c < D; c++) d += q[c] * k[slot(j) * D + c]
    return d / Math.sqrt(D)
  })
  const m = Math.max(...s), e = s.map((z) => Math.exp(z - m)), Z = e.reduce((a, c) => a + c, 0)
  return Array.from({ length: D }, (_, c) => e.reduce((a, p, j) => a + (p / Z) * v[slot(j) * D + c], 0))
}

t.test('a replay runs the recorded ops on the values written since, as a float64 reference says', async (t) => {
  await settle()
  const base = live()
  const p = stepParts()
  t.equal(_native.graphInfo(p.g).ops, 3, 'three ops recorded')
  t.equal(await code(p.kP.data()), 'resolved', 'recording ran nothing: the pools are readable and unchanged')
  t.same(Array.from(await p.kP.data()), Array.from(rand(NB * BS * D, 2)), 'the pools hold what they held')
  const W = await p.w.data()
  for (const [round, slots] of [[0, [2, 12]], [1, [6, 13]]] as const) {
    const xs = rand(B * 3, 10 + round)
    const lensIn = Int32Array.of(1 + (slots[0] % BS) + (slots[0] >= BS ? BS : 0), 1 + (slots[1] % BS) + (slots[1] >= 3 * BS ? BS : 0))
    // round 0 writes the inputs first; round 1 hands them to the replay, which writes them before its ops
    if (round === 0) {
      _native.write(p.x, xs)
      _native.write(p.slots, Int32Array.from(slots))
      _native.write(p.lens, lensIn)
      _native.graphReplay(p.g)
    } else _native.graphReplay(p.g, [p.x, p.slots, p.lens], [xs, Int32Array.from(slots), lensIn])
    const [y, k, v, o, lens] = await Promise.all([p.y().data(), p.kP.data(), p.vP.data(), p.o().data(), p.lens.intData()])
    for (let b = 0; b < B; b++) {
      const yr = Float64Array.from({ length: D }, (_, n) => xs[b * 3] * W[n * 3] + xs[b * 3 + 1] * W[n * 3 + 1] + xs[b * 3 + 2] * W[n * 3 + 2])
      t.ok(yr.every((z, n) => Math.abs(z - y[b * D + n]) < 1e-6), `round ${round}: y row ${b} (float32 sums of 3 products: 1e-6)`)
      t.same(Array.from(k.subarray(slots[b] * D, slots[b] * D + D)), Array.from(y.subarray(b * D, b * D + D)), `round ${round}: key row ${b} written at slot ${slots[b]}`)
      const ref = attentionRef(k, v, Float64Array.from(y.subarray(b * D, b * D + D)), b, lens[b])
      // float32 softmax and sums over at most 6 keys
      t.ok(ref.every((z, c) => Math.abs(z - o[b * D + c]) < 1e-5), `round ${round}: attention of sequence ${b} over ${lens[b]} keys`)
    }
  }
  // replaying allocates nothing: memory stays where it is over many replays
  await settle()
  const held = live()
  for (let i = 0; i < 50; i++) _native.graphReplay(p.g)
  await settle()
  t.equal(live(), held, '50 replays: live memory unchanged')
  _native.graphRelease(p.g)
  for (const x of p.all()) x.dispose()
  await settle()
  t.equal(live(), base, 'released and disposed: back to baseline')
})

t.test('a failure inside a replay marks what the failing op writes, passes on, and is gone on the next good replay', async (t) => {
  const p = stepParts()
  _native.write(p.x, rand(B * 3, 20))
  _native.write(p.slots, Int32Array.of(2, 999))
  _native.graphReplay(p.g)
  t.equal(await code(p.kP.data()), 'ERR_ARGUMENT kv_write', 'the pools carry the write\'s failure')
  t.equal(await code(p.o().data()), 'ERR_ARGUMENT kv_write', 'attention over them passes it on')
  t.equal(await code(p.y().data()), 'resolved', 'the op before it is untouched')
  t.equal(await code(p.w.data()), 'resolved', 'so is the weight')
  const other = tensor(rand(8, 4), [8])
  t.equal(await code(other.data()), 'resolved', 'and a tensor outside the recording')
  // the pools are rewritten whole (valid again), then a good replay
  p.kP.fill_(0.5)
  p.vP.fill_(0.25)
  _native.write(p.slots, Int32Array.of(2, 12))
  _native.graphReplay(p.g)
  t.equal(await code(p.o().data()), 'resolved', 'the next good replay computes again')
  const o = await p.o().data()
  // every key of sequence 1 but the new one is 0.5 (v 0.25): its output mixes 0.25 with y's row
  t.ok(o.every(Number.isFinite), 'finite values')
  // a failure that comes from outside: an op queued before the replay fails the pools
  const bad = tensor(rand(2 * D, 5), [2, D])
  kvWrite(p.kP, p.vP, bad, bad, tensor(Int32Array.of(0, 77), [2], { dtype: 'int32' }))
  _native.graphReplay(p.g)
  t.equal(await code(p.o().data()), 'ERR_ARGUMENT kv_write', 'an input failed before the replay passes on to its outputs')
  _native.graphRelease(p.g)
  for (const x of [...p.all(), other, bad]) x.dispose()
})

t.test('refused: replaying with a disposed input, a released recording, waits and copies while recording', async (t) => {
  const p = stepParts()
  const before = live()
  // a good replay first: replays check the outside handles again only after some handle died,
  // so this one must see the dispose below
  _native.graphReplay(p.g)
  await p.o().data()
  const unrelated = tensor(rand(4, 9), [4])
  unrelated.dispose()
  _native.graphReplay(p.g)
  t.equal(await code(p.o().data()), 'resolved', 'another tensor disposed: the replay runs')
  p.w.dispose()
  t.throws(() => _native.graphReplay(p.g), { code: 'ERR_DISPOSED' }, 'a tensor read from outside was disposed')
  t.equal(live(), before, 'the recording still holds the memory it reads (nothing freed under it)')
  _native.graphRelease(p.g)
  t.throws(() => _native.graphReplay(p.g), { code: 'ERR_DISPOSED' }, 'released')
  t.throws(() => _native.graphInfo(p.g), { code: 'ERR_DISPOSED' })
  const q = stepParts()
  _native.graphReplay(q.g, [q.x], [rand(B * 3, 30)])
  const y0 = await q.y().data()
  t.throws(() => _native.graphReplay(q.g, [q.x, q.slots], [rand(B * 3, 31), new Int32Array(B + 1)]), { code: 'ERR_SHAPE', message: /data: expected 8 bytes/ }, 'input data of the wrong size')
  t.throws(() => _native.graphReplay(q.g, [q.x], []), { code: 'ERR_ARGUMENT', message: /one typed array per input/ })
  t.throws(() => _native.graphReplay(q.g, [q.x.T], [rand(B * 3, 31)]), { code: 'ERR_ARGUMENT', message: /contiguous/ })
  t.same(Array.from(await q.y().data()), Array.from(y0), 'a refused replay queued nothing (not even the valid writes before the bad one)')
  t.same(Array.from(await q.x.data()), Array.from(rand(B * 3, 30)), 'its inputs hold what the last replay wrote')
  _native.graphRelease(q.g)
  for (const z of q.all()) z.dispose()
  const x = tensor(rand(4, 6), [4])
  t.throws(() => _native.graphRecord(() => void x.data()), { code: 'ERR_ARGUMENT', message: /wait/ }, 'a wait')
  t.throws(() => _native.graphRecord(() => void _native.graphRecord(() => undefined)), { code: 'ERR_ARGUMENT', message: /already/ }, 'nested')
  t.throws(() => _native.graphRecord(() => x.fill_('one' as unknown as number)), { code: 'ERR_ARGUMENT' }, 'an op refused while recording throws out of graphRecord')
  t.throws(() => _native.graphRecord(1 as unknown as () => void), { code: 'ERR_ARGUMENT', message: /fn/ })
  t.equal(await code(x.data()), 'resolved', 'recording state ends with the throw: waits work again')
  for (const z of [...p.all(), x]) z.dispose()
})

const cfg = { ...TransformerLM.config('tiny'), nLayers: 2, maxSeqLen: 64, seed: 5 }
const prompt = (n: number, s: number) => Array.from({ length: n }, (_, i) => (s * 37 + i * 11) % 256)
// until the test ends, a DecodeGraph replay for which `when` holds gets its second row's block
// table pointed outside the pool (its kv_write fails)
type Rows = { blocks: readonly number[] }[]
function breakReplay(t: Test, when: (rows: Rows, follow?: boolean) => boolean): void {
  const proto = DecodeGraph.prototype as unknown as { run: (rows: Rows, params: unknown, bs: unknown, follow?: boolean) => Promise<unknown> }
  const run = proto.run
  proto.run = function (this: unknown, rows, params, bs, follow) {
    if (when(rows, follow)) rows = rows.map((r, i) => (i === 1 ? { ...r, blocks: [10_000] } : r))
    return run.call(this, rows, params, bs, follow)
  }
  t.teardown(() => {
    proto.run = run
  })
}

// a request's ids run alone, op by op, on an engine of its own
async function alone(m: TransformerLM, p: number[], o: RequestOptions): Promise<number[]> {
  const a = new GenerationEngine(m, { maxBatch: 1, recordSteps: false })
  const r = Array.from(await a.generate(p, o).result)
  await a.close()
  return r
}
// ragged prompts, greedy and seeded sampling, and different lengths, so requests leave at
// different steps and the batch size changes
const MIXED: [number[], RequestOptions][] = [
  [prompt(1, 1), { maxNewTokens: 12 }],
  [prompt(6, 2), { maxNewTokens: 5, temperature: 0.9, seed: 3 }],
  [prompt(3, 3), { maxNewTokens: 9, temperature: 1.2, topK: 7, seed: 8 }],
  [prompt(1, 4), { maxNewTokens: 14, temperature: 0.7, topP: 0.8, seed: 21 }],
  [prompt(9, 5), { maxNewTokens: 3 }],
  [prompt(2, 6), { maxNewTokens: 11, temperature: 1, topK: 3, topP: 0.9, seed: 2 }],
]

async function serve(m: TransformerLM, recordSteps: boolean, overlapSteps = true, mixed = MIXED) {
  const e = new GenerationEngine(m, { maxBatch: 4, maxTokens: 256, prefillChunk: 4, recordSteps, overlapSteps })
  // half at once, the rest joining at later steps
  const reqs = mixed.slice(0, 3).map(([p, o]) => e.generate(p, o))
  for (const [p, o] of mixed.slice(3)) {
    await new Promise((r) => setTimeout(r, 3))
    reqs.push(e.generate(p, o))
  }
  const ids = (await Promise.all(reqs.map((r) => r.result))).map((r) => Array.from(r))
  const stats = e.stats()
  await e.close()
  return { ids, logprobs: reqs.map((r) => [...r.logprobs]), stats }
}

for (const ffn of ['versatile', 'dense'] as const)
  t.test(`${ffn}: the replayed decode step gives the op-by-op step's ids and logprobs bit for bit`, async (t) => {
    const m = new TransformerLM({ ...cfg, ffn })
    t.teardown(() => m.dispose())
    await settle()
    const before = live()
    const op = await serve(m, false), rec = await serve(m, true)
    t.equal(op.stats.replayedSteps, 0, 'op by op: no replays')
    t.ok(rec.stats.replayedSteps > rec.stats.steps / 2, `recorded: ${rec.stats.replayedSteps} of ${rec.stats.steps} steps replayed`)
    t.same(rec.ids, op.ids, 'the same ids')
    t.same(rec.logprobs, op.logprobs, 'the same logprobs, exactly')
    t.equal(rec.stats.recordedSteps, 0, 'an idle engine holds no recording')
    await settle()
    t.equal(live(), before, 'memory back to baseline')
  })

// a step queued before the one ahead of it is read back (overlapSteps): stop tokens are seen one
// step late, so the request has had one token too many computed, which must be dropped
t.test('overlapped steps: the same ids and logprobs; a stop token one step late drops the extra token', async (t) => {
  const m = new TransformerLM({ ...cfg, ffn: 'dense' })
  t.teardown(() => m.dispose())
  const base = await serve(m, false)
  // stop tokens met mid-stream: a request's 5th and another's 7th token, cut where they first occur
  const stops = new Map([[0, base.ids[0][4]], [3, base.ids[3][6]]])
  const mixed = MIXED.map(([p, o], i): [number[], RequestOptions] => [p, stops.has(i) ? { ...o, stopTokens: [stops.get(i)!] } : o])
  const keep = (i: number) => (stops.has(i) ? base.ids[i].indexOf(stops.get(i)!) + 1 : base.ids[i].length)
  const want = { ids: base.ids.map((xs, i) => xs.slice(0, keep(i))), logprobs: base.logprobs.map((xs, i) => xs.slice(0, keep(i))) }
  t.ok(want.ids[0].length < base.ids[0].length && want.ids[3].length < base.ids[3].length, 'both stop before maxNewTokens')
  await settle()
  const before = live()
  const on = await serve(m, true, true, mixed), off = await serve(m, true, false, mixed), op = await serve(m, false, true, mixed)
  t.ok(on.stats.overlappedSteps > on.stats.replayedSteps / 3, `${on.stats.overlappedSteps} of ${on.stats.replayedSteps} replayed steps overlapped`)
  t.equal(off.stats.overlappedSteps, 0, 'overlapSteps: false overlaps none')
  t.equal(op.stats.overlappedSteps, 0, 'op by op overlaps none')
  for (const r of [on, off, op]) {
    t.same(r.ids, want.ids, 'the ids of the run without stop tokens, cut at each stop token')
    t.same(r.logprobs, want.logprobs, 'and the same logprobs, exactly')
  }
  await settle()
  t.equal(live(), before, 'memory back to baseline')
})

t.test('overlapped steps: an abort mid-stream stops the request and frees its cache; the others are unaffected', async (t) => {
  const m = new TransformerLM({ ...cfg, ffn: 'dense' })
  t.teardown(() => m.dispose())
  const want = await alone(m, prompt(2, 4), { maxNewTokens: 30, temperature: 0.9, seed: 6 })
  await settle()
  const before = live()
  const e = new GenerationEngine(m, { maxBatch: 2, maxTokens: 256 })
  const ac = new AbortController()
  const leaving = e.generate(prompt(3, 2), { maxNewTokens: 40, signal: ac.signal })
  const staying = e.generate(prompt(2, 4), { maxNewTokens: 30, temperature: 0.9, seed: 6 })
  let got = 0
  await t.rejects(async () => {
    for await (const _ of leaving) if (++got === 6) ac.abort()
  }, { code: 'ERR_ABORTED' }, 'its stream ends with the abort')
  t.equal(await code(leaving.result), 'ERR_ABORTED', 'the aborted request rejects')
  t.ok(leaving.tokens.length >= 6 && leaving.tokens.length < 40, `it stopped after ${leaving.tokens.length} tokens`)
  t.same(Array.from(await staying.result), want, 'the other request gets what it gets alone')
  const st = e.stats()
  t.ok(st.overlappedSteps > 0, `${st.overlappedSteps} steps overlapped`)
  t.equal(st.usedBlocks, 0, 'every block back in the pool')
  await e.close()
  await settle()
  t.equal(live(), before, 'memory back to baseline')
})

t.test('a failure inside an overlapped step fails its requests, with the step queued after it; the next requests are served as before', async (t) => {
  const m = new TransformerLM({ ...cfg, ffn: 'dense' })
  t.teardown(() => m.dispose())
  const want = await alone(m, prompt(2, 9), { maxNewTokens: 8, temperature: 0.8, seed: 4 })
  await settle()
  const before = live()
  const e = new GenerationEngine(m, { maxBatch: 2, maxTokens: 256 })
  // the third overlapped step writes a slot outside the pool for its second row
  let follows = 0
  breakReplay(t, (rows, follow) => follow === true && ++follows === 3)
  const hit = [e.generate(prompt(1, 7), { maxNewTokens: 20 }), e.generate(prompt(1, 8), { maxNewTokens: 20, temperature: 1, seed: 1 })]
  for (const r of hit) t.equal(await code(r.result), 'ERR_ARGUMENT kv_write', 'a request of the failed step fails with the op\'s error')
  t.ok(follows >= 4, `a step was queued after the failing one (${follows} overlapped steps queued)`)
  t.same(Array.from(await e.generate(prompt(2, 9), { maxNewTokens: 8, temperature: 0.8, seed: 4 }).result), want, 'a later request gets what it gets alone')
  t.equal(e.stats().usedBlocks, 0, 'every block back in the pool')
  await e.close()
  await settle()
  t.equal(live(), before, 'memory back to baseline')
})

t.test('a failure inside a replayed step fails that step\'s requests; the next requests are served as before', async (t) => {
  const m = new TransformerLM({ ...cfg, ffn: 'versatile' })
  t.teardown(() => m.dispose())
  const want = await alone(m, prompt(2, 9), { maxNewTokens: 8, temperature: 0.8, seed: 4 })
  await settle()
  const before = live()
  const e = new GenerationEngine(m, { maxBatch: 2, maxTokens: 256 })
  // the fourth replay of this engine writes a slot outside the pool for its second row
  let n = 0
  breakReplay(t, (rows) => ++n === 4 && rows.length > 1)
  const hit = [e.generate(prompt(1, 7), { maxNewTokens: 10 }), e.generate(prompt(1, 8), { maxNewTokens: 10, temperature: 1, seed: 1 })]
  const waiting = e.generate(prompt(2, 9), { maxNewTokens: 8, temperature: 0.8, seed: 4 })
  for (const r of hit) t.equal(await code(r.result), 'ERR_ARGUMENT kv_write', 'a request of the failed step fails with the op\'s error')
  t.same(Array.from(await waiting.result), want, 'a request that was waiting gets what it gets alone')
  const after = await e.generate(prompt(2, 9), { maxNewTokens: 8, temperature: 0.8, seed: 4 }).result
  t.same(Array.from(after), want, 'and so does a later one')
  t.ok(e.stats().replayedSteps > 4, 'replays went on after the failure')
  await e.close()
  await settle()
  t.equal(live(), before, 'memory back to baseline')
})

// more than 8 rows: the GEMMs take their packed path, and a replay packs each weight once and
// reads the packed copy from then on (packing is a copy, so the same bits); a weight written in
// place since is packed again
t.test('a replayed step of 12 rows (packed weights) equals the op-by-op step, also after a weight changes in place', async (t) => {
  const m = new TransformerLM({ ...cfg, ffn: 'dense' })
  t.teardown(() => m.dispose())
  await settle()
  const before = live()
  const B = 12, BS = 16
  const pool = new KVPool(m.blocks.length, m.config.dModel, B * BS, BS, m.device)
  const g = new DecodeGraph(m, pool, B)
  const rows: StepRow[] = Array.from({ length: B }, (_, b) => ({ tokens: Int32Array.of((b * 29 + 3) % 256), start: 0, blocks: [b], sample: true }))
  const params = Float32Array.from({ length: 4 * B }, (_, i) => [0.9, 0, 1, ((i >> 2) * 0.37) % 1][i % 4])
  const opByOp = async () => {
    const logits = runStep(m, pool, rows)!
    try {
      return await sampleRows(logits, params)
    } finally {
      logits.dispose()
    }
  }
  const want0 = await opByOp(), got0 = await g.run(rows, params, BS)
  t.same(got0, want0, 'replayed (packed weights) = op by op, ids and logprobs')
  const packed = g.info().packedBytes
  // the packed copies of att_proj, attn_out, ff_proj, ff_out per block and the head (float32)
  const gemmWeights = [...m.parameters()].filter(([k]) => /att_proj|attn_out|ff_proj|ff_out/.test(k)).reduce((n, [, w]) => n + w.size * 4, 0)
  t.ok(packed >= gemmWeights && packed <= gemmWeights * 1.1, `${packed} bytes packed for ${gemmWeights} bytes of GEMM weights`)
  const got1 = await g.run(rows, params, BS)
  t.same(got1, want0, 'a second replay reads the packed copy: the same')
  t.equal(g.info().packedBytes, packed, 'and packs nothing more')
  // write two weights in place (copy_ into the same storage)
  for (const k of ['transformer.blocks.0.ff_proj.weight', 'transformer.ff_out.weight']) {
    const w = m.parameters().get(k)!
    const scaled = tensor(Float32Array.from(await w.data(), (x, i) => x * (1 + 0.5 * Math.sin(i))), w.shape)
    w.copy_(scaled)
    scaled.dispose()
  }
  const want2 = await opByOp(), got2 = await g.run(rows, params, BS)
  t.notSame(want2.logprobs, want0.logprobs, 'the change moves the log-probabilities')
  t.same(got2, want2, 'the replay after the change = op by op with the new weights')
  g.dispose()
  pool.dispose()
  await settle()
  t.equal(live(), before, 'memory back to baseline (the packed copies go with the recording)')
})

t.test('a recording follows the model: swapped parameters need a new one, a disposed one fails the step', async (t) => {
  const m = new TransformerLM({ ...cfg, ffn: 'dense' })
  t.teardown(() => m.dispose())
  const pool = new KVPool(m.blocks.length, m.config.dModel, 64, 16, m.device)
  const g = new DecodeGraph(m, pool, 2)
  t.ok(g.matches(m), 'matches the model it was recorded on')
  t.ok(g.info().ops > 10, `${g.info().ops} ops recorded`)
  const params = m.parameters.bind(m)
  const swapped = params().get('transformer.ln_f.weight')!.clone()
  ;(m as { parameters: () => Map<string, Tensor> }).parameters = () => new Map([...params()].map(([k, v]) => [k, k === 'transformer.ln_f.weight' ? swapped : v]))
  t.notOk(g.matches(m), 'a parameter swapped for another tensor: no match')
  delete (m as { parameters?: unknown }).parameters
  t.ok(g.matches(m), 'restored')
  g.dispose()
  pool.dispose()
  swapped.dispose()
  const e = new GenerationEngine(m, { maxBatch: 2, maxTokens: 256 })
  const r = e.generate(prompt(1, 3), { maxNewTokens: 30 })
  for await (const _ of r) break
  m.parameters().get('transformer.ln_f.weight')!.dispose()
  t.equal(await code(r.result), 'ERR_DISPOSED', 'a step after the weight was disposed fails its request')
  await e.close()
})

t.test('a decode step that cannot be recorded runs op by op, with the same results', async (t) => {
  const m = new TransformerLM({ ...cfg, ffn: 'versatile' })
  t.teardown(() => m.dispose())
  const want = await serve(m, false)
  // a forward that waits on its input: fine op by op, refused while recording
  const f = m.blocks[1].ffn as unknown as { forward: (x: Tensor, o: unknown) => unknown }
  const fwd = f.forward.bind(f)
  f.forward = (x, o) => {
    x.data().catch(() => undefined)
    return fwd(x, o)
  }
  t.teardown(() => {
    delete (f as { forward?: unknown }).forward
  })
  const got = await serve(m, true)
  t.equal(got.stats.replayedSteps, 0, 'no step replayed')
  t.same(got.ids, want.ids, 'the same ids')
  t.same(got.logprobs, want.logprobs, 'the same logprobs')
})
