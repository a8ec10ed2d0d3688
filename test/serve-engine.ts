// GenerationEngine: continuous batching gives each request what it gets alone (greedy and
// sampled, ragged prompts, requests arriving at different steps), and what it gets alone matches
// a plain reference over the full forward; abort, stop tokens, close, FIFO admission, chunked
// prefill, bad requests failing alone, and memory back to baseline.
import t from 'tap'
import { getEventListeners } from 'events'
import { GenerationEngine, GenerationRequest, RequestOptions, TransformerLM, VffnError, device, tensor } from '../lib/index'

const cfg = { ...TransformerLM.config('tiny'), nLayers: 2, maxSeqLen: 64, seed: 3 }
const live = () => device('cpu').memory().live
// each test frees its model, so no model of an earlier one is collected during a later one's measurement
const own = (t: { teardown(f: () => void): void }, m: TransformerLM) => {
  t.teardown(() => m.dispose())
  return m
}
// the baseline: collect what earlier tests dropped without disposing, and let queued work finish
// (finalizers of collected tensors run in a later task, hence the turn of the event loop between)
const settle = async () => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  await new Promise((r) => setImmediate(r))
  gc?.()
  await device('cpu').sync()
}

// mulberry32, written out again: the reference draws the request's uniforms itself
function draws(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), a | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

// the documented rule over one row of logits, computed from probabilities (float32 params as the engine passes them)
function pick(row: Float32Array, o: RequestOptions, u: number): number {
  const T = Math.fround(o.temperature ?? 0), K = o.topK ?? 0, P = Math.fround(o.topP ?? 1)
  const ids = [...row.keys()]
  if (T === 0) return ids.reduce((b, j) => (row[j] > row[b] ? j : b), 0)
  ids.sort((a, b) => row[b] / T - row[a] / T || a - b)
  let kept = K > 0 ? ids.slice(0, K) : ids
  const prob = (set: number[]) => {
    const m = Math.max(...set.map((j) => row[j] / T))
    const e = set.map((j) => Math.exp(row[j] / T - m))
    const s = e.reduce((x, y) => x + y, 0)
    return e.map((x) => x / s)
  }
  if (P < 1) {
    const p = prob(kept)
    let c = 0, n = 0
    while (n < kept.length && c < P) c += p[n++]
    kept = kept.slice(0, Math.max(n, 1))
  }
  // the draw walks the kept ids in ascending id order
  kept.sort((a, b) => a - b)
  const p = prob(kept)
  let c = 0
  for (let i = 0; i < kept.length; i++) if ((c += p[i]) > u) return kept[i]
  return kept[kept.length - 1]
}

// decoding by the full forward over the whole sequence at every step: no cache, no batching
async function reference(m: TransformerLM, prompt: number[], o: RequestOptions): Promise<number[]> {
  const seq = [...prompt], out: number[] = [], u = draws(o.seed ?? 0), V = m.config.vocabSize
  for (let i = 0; i < (o.maxNewTokens ?? 16); i++) {
    const r = m.forward(tensor(Int32Array.from(seq), [1, seq.length], { dtype: 'int32' }))
    const all = await r.logits.data()
    r.dispose()
    // u as the float32 params carry it, below 1
    const id = pick(all.subarray((seq.length - 1) * V, seq.length * V), o, Math.min(Math.fround(u()), 1 - 2 ** -24))
    out.push(id)
    seq.push(id)
    if (o.stopTokens?.includes(id)) break
  }
  return out
}

const alone = async (m: TransformerLM, p: number[], o: RequestOptions) => {
  const e = new GenerationEngine(m, { maxBatch: 1, maxTokens: 64 })
  const r = Array.from(await e.generate(p, o).result)
  await e.close()
  return r
}

const prompt = (n: number, s: number) => Array.from({ length: n }, (_, i) => (s * 31 + i * 7) % 256)
const MIXED: [number[], RequestOptions][] = [
  [prompt(1, 1), { maxNewTokens: 9 }],
  [prompt(5, 2), { maxNewTokens: 6, temperature: 0.8, seed: 11 }],
  [prompt(17, 3), { maxNewTokens: 7, temperature: 1.2, topK: 5, seed: 12 }],
  [prompt(3, 4), { maxNewTokens: 12, temperature: 1, topP: 0.7, seed: 13 }],
  [prompt(33, 5), { maxNewTokens: 5, temperature: 0.6, topK: 20, topP: 0.9, seed: 14 }],
  [prompt(2, 6), { maxNewTokens: 10 }],
]

// bfloat16: an inference-only model, its products on the bfloat16 kernels (batches of 1 to 4 rows)
for (const [ffn, dtype] of [['versatile', 'float32'], ['dense', 'float32'], ['versatile', 'bfloat16'], ['dense', 'bfloat16']] as const) {
  t.test(`${ffn}${dtype === 'bfloat16' ? ' (bfloat16 weights)' : ''}: alone equals the full-forward reference; batched (arriving at different steps) equals alone`, async (t) => {
    const m = own(t, new TransformerLM({ ...cfg, ffn, dtype }))
    const solo: number[][] = []
    for (const [p, o] of MIXED) solo.push(await alone(m, p, o))
    for (const [i, [p, o]] of MIXED.entries()) t.same(solo[i], await reference(m, p, o), `request ${i} alone = the reference (${o.temperature ? 'sampled' : 'greedy'}, prompt ${p.length})`)
    // a small prefill chunk makes long prompts span steps; requests join while others stream
    const e = new GenerationEngine(m, { maxBatch: 4, maxTokens: 160, prefillChunk: 8 })
    const reqs: GenerationRequest[] = [e.generate(...MIXED[0]), e.generate(...MIXED[1])]
    let seen = 0
    for await (const _ of reqs[0]) {
      seen++
      if (seen === 2) reqs.push(e.generate(...MIXED[2]))
      if (seen === 4) reqs.push(e.generate(...MIXED[3]), e.generate(...MIXED[4]))
      if (seen === 6) reqs.push(e.generate(...MIXED[5]))
    }
    const got = await Promise.all(reqs.map((r) => r.result))
    t.same(got.map((g) => Array.from(g)), solo, 'every request as alone')
    t.ok(e.stats().steps < solo.reduce((s, x) => s + x.length, 0), `${e.stats().steps} steps for ${solo.reduce((s, x) => s + x.length, 0)} tokens: requests shared steps`)
    await e.close()
  })
}

t.test('streaming, stop tokens, model.generate over the engine with ragged prompts', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'versatile' }))
  const e = new GenerationEngine(m, { maxBatch: 8, maxTokens: 256 })
  const base = await e.generate(prompt(4, 7), { maxNewTokens: 10, temperature: 1, seed: 5 }).result
  const stop = base[3]
  const cut = Array.from(base).indexOf(stop) + 1
  const r = e.generate(prompt(4, 7), { maxNewTokens: 10, temperature: 1, seed: 5, stopTokens: [9999, stop] })
  const streamed: number[] = []
  for await (const id of r) {
    streamed.push(id)
    t.same(r.tokens.slice(0, streamed.length), streamed, 'each token is visible as it is yielded')
  }
  t.same(streamed, Array.from(base).slice(0, cut), `stops after the first ${stop} (kept), at ${cut} tokens`)
  t.same(Array.from(await r.result), streamed, 'result holds what was streamed')
  t.equal(r.logprobs.length, cut)
  t.ok(r.logprobs.every((x) => x <= 0 && Number.isFinite(x)), 'log-probabilities are finite and <= 0')
  const ps = [prompt(3, 8), prompt(9, 9), prompt(1, 10)]
  const g = await m.generate(ps, { maxNewTokens: 5, temperature: 0.9, seed: 40 })
  for (const [b, p] of ps.entries())
    t.same(Array.from(g[b]), Array.from(await e.generate(p, { maxNewTokens: 5, temperature: 0.9, seed: 40 + b }).result), `generate's prompt ${b} = the engine's request with seed + ${b}`)
  await e.close()
})

t.test('abort mid-stream stops the request and frees its cache; others go on', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'versatile' }))
  const other = await alone(m, prompt(6, 2), { maxNewTokens: 20 })
  // after a first run: lazily grown native scratch is not the engine's
  await settle()
  const before = live()
  const e = new GenerationEngine(m, { maxBatch: 4, maxTokens: 128 })
  const ac = new AbortController()
  const a = e.generate(prompt(5, 1), { maxNewTokens: 40, signal: ac.signal })
  const b = e.generate(prompt(6, 2), { maxNewTokens: 20 })
  let n = 0
  await t.rejects((async () => {
    for await (const _ of a) if (++n === 3) ac.abort()
  })(), { code: 'ERR_ABORTED' }, 'the iteration throws ERR_ABORTED')
  await t.rejects(a.result, { code: 'ERR_ABORTED' })
  t.ok(a.tokens.length >= 3 && a.tokens.length < 40, `stopped after ${a.tokens.length} tokens`)
  t.equal(e.stats().running <= 1, true, 'the aborted request left the batch')
  t.same(Array.from(await b.result), other, 'the other request is unaffected')
  t.equal(e.stats().usedBlocks, 0, 'every block is back in the pool')
  // aborted while waiting: refused at once, never admitted
  const ac2 = new AbortController()
  const full = e.generate(prompt(60, 3), { maxNewTokens: 4 })
  const queued = e.generate(prompt(60, 4), { maxNewTokens: 4, signal: ac2.signal })
  ac2.abort()
  await t.rejects(queued.result, { code: 'ERR_ABORTED' })
  await full.result
  // a finished request lets go of its signal, so a long-lived one does not keep it reachable
  const ac3 = new AbortController()
  const finished = e.generate(prompt(2, 5), { maxNewTokens: 3, signal: ac3.signal })
  t.equal(getEventListeners(ac3.signal, 'abort').length, 1, 'a running request listens to its signal')
  await finished.result
  t.equal(getEventListeners(ac3.signal, 'abort').length, 0, 'a finished one no longer does')
  await e.close()
  await settle()
  t.equal(live(), before, 'memory back to baseline after close')
})

t.test('FIFO admission when the budget is full: nothing overtakes, every request completes', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'dense' }))
  // 7 blocks of 8: A takes 6, B needs 6 and waits, C needs 1 and would fit but waits behind B
  const e = new GenerationEngine(m, { maxBatch: 8, maxTokens: 56, blockSize: 8 })
  const firsts: string[] = []
  let seen: { running: number; waiting: number } | undefined
  const go = (name: string, p: number[], n: number) => {
    const r = e.generate(p, { maxNewTokens: n })
    void (async () => {
      for await (const _ of r) {
        firsts.push(name)
        // A's first token: A still holds its blocks for 5 more tokens
        if (name === 'A') seen = { running: e.stats().running, waiting: e.stats().waiting }
        break
      }
    })()
    return r
  }
  const A = go('A', prompt(40, 1), 6), B = go('B', prompt(40, 2), 6), C = go('C', prompt(4, 3), 4)
  const got = await Promise.all([A.result, B.result, C.result])
  t.same(seen, { running: 1, waiting: 2 }, 'B and C wait while A holds the blocks B needs')
  t.same(firsts, ['A', 'B', 'C'], 'first tokens in arrival order')
  t.same(got.map((g) => g.length), [6, 6, 4], 'every request completes')
  const over = e.generate(prompt(60, 1), { maxNewTokens: 4 })
  await t.rejects(over.result, { code: 'ERR_ARGUMENT', message: /more than the whole budget/ }, 'a request over the whole budget is refused')
  await e.close()
})

t.test('chunked prefill: a long prompt delays a running stream by one chunk per step', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'versatile' }))
  const e = new GenerationEngine(m, { maxBatch: 4, maxTokens: 256, prefillChunk: 8 })
  const run = e.generate(prompt(2, 1), { maxNewTokens: 30 })
  let during = 0, long: GenerationRequest | undefined
  for await (const _ of run) {
    if (run.tokens.length === 2) long = e.generate(prompt(56, 2), { maxNewTokens: 2 })
    else if (long && long.tokens.length === 0) during++
  }
  // 56 prompt tokens at 8 per step: 7 steps of prefill, the stream gets a token in each
  t.ok(during >= 6, `the running stream got ${during} tokens while the long prompt was prefilled`)
  await long!.result
  await e.close()
})

t.test('prompts that arrive while nothing decodes are prefilled up to idlePrefillChunk per step', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'dense' }))
  const prompts = [prompt(20, 3), prompt(17, 4), prompt(23, 5)]
  const opts = [{ maxNewTokens: 3 }, { maxNewTokens: 3, temperature: 0.9, seed: 7 }, { maxNewTokens: 3 }]
  const solo = await Promise.all(prompts.map((p, i) => alone(m, p, opts[i])))
  // default: all 60 prompt tokens in one step, then 2 decode steps. 8: 8 tokens a step (8 steps,
  // the last sampling the third prompt's first token), then 2. 30: the first step takes 30 (the
  // first prompt and 10 of the second); from then on someone decodes and steps take 8: the second
  // prompt ends in step 2, the third (1 + 8 + 8 + 6 tokens) in step 5, and its last 2 tokens
  // take steps 6 and 7
  for (const [idle, steps] of [[undefined, 3], [8, Math.ceil(60 / 8) + 2], [30, 7]] as const) {
    const e = new GenerationEngine(m, { maxBatch: 4, maxTokens: 256, prefillChunk: 8, idlePrefillChunk: idle })
    t.equal(e.idlePrefillChunk, idle ?? 2048, 'the setting (default max(prefillChunk, 2048))')
    const got = await Promise.all(prompts.map((p, i) => e.generate(p, opts[i]).result))
    t.same(got.map((g) => Array.from(g)), solo, `idlePrefillChunk ${idle}: every request as alone`)
    // 60 prompt tokens before anyone decodes, then 2 decode steps
    t.equal(e.stats().steps, steps, `${steps} steps`)
    await e.close()
  }
})

// resident memory of this process (Linux), in bytes
async function rss(): Promise<number> {
  const { readFile } = await import('fs/promises')
  return Number(/VmRSS:\s+(\d+) kB/.exec(await readFile('/proc/self/status', 'utf8'))![1]) * 1024
}

t.test('prefault: the KV pool is touched at construction, and the results are the same', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'dense' }))
  // a pool of tensors well above malloc's largest mmap threshold (32 MiB), so each is fresh memory
  const maxTokens = Math.ceil((48 << 20) / (cfg.dModel * 4))
  const want = await alone(m, prompt(9, 2), { maxNewTokens: 5 })
  const grew: Record<string, number> = {}
  for (const prefault of [false, true]) {
    await settle()
    const before = await rss()
    const e = new GenerationEngine(m, { maxBatch: 2, maxTokens, prefault })
    t.equal(e.prefault, prefault, 'the setting')
    await device('cpu').sync()
    grew[String(prefault)] = (await rss()) - before
    const bytes = e.stats().poolBytes
    if (prefault) t.ok(grew.true >= 0.9 * bytes, `prefault: resident memory grew by ${grew.true} bytes for a pool of ${bytes}`)
    else t.ok(grew.false < 0.25 * bytes, `default: resident memory grew by ${grew.false} bytes for a pool of ${bytes} (touched when used)`)
    t.same(Array.from(await e.generate(prompt(9, 2), { maxNewTokens: 5 }).result), want, 'the same tokens as alone')
    await e.close()
  }
})

t.test('bad requests fail alone with a code; the engine and other requests go on', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'versatile' }))
  const e = new GenerationEngine(m, { maxBatch: 4, maxTokens: 128 })
  const want = await alone(m, prompt(4, 1), { maxNewTokens: 8, temperature: 1, seed: 2 })
  const good = e.generate(prompt(4, 1), { maxNewTokens: 8, temperature: 1, seed: 2 })
  const aborted = new AbortController()
  aborted.abort()
  const bad: [string, GenerationRequest, string, RegExp][] = [
    ['an empty prompt', e.generate([]), 'ERR_SHAPE', /prompt: a prompt needs at least one token/],
    ['an id outside the vocabulary', e.generate([1, 256]), 'ERR_ARGUMENT', /prompt\[1\]: token id 256 is outside the vocabulary/],
    ['a negative id', e.generate([-1]), 'ERR_ARGUMENT', /prompt\[0\]: expected an integer/],
    ['prompt + maxNewTokens over maxSeqLen', e.generate(prompt(60, 1), { maxNewTokens: 5 }), 'ERR_SHAPE', /exceed maxSeqLen 64/],
    ['an aborted signal', e.generate([1], { signal: aborted.signal }), 'ERR_ABORTED', /aborted before it started/],
    ['a string temperature', e.generate([1], { temperature: '1' as never }), 'ERR_ARGUMENT', /opts\.temperature/],
    ['topP 0', e.generate([1], { topP: 0 }), 'ERR_ARGUMENT', /opts\.topP/],
    ['a misspelled key', e.generate([1], { topk: 2 } as never), 'ERR_ARGUMENT', /did you mean 'topK'/],
    ['a prompt that is not an array', e.generate('12' as never), 'ERR_ARGUMENT', /^prompt: /],
  ]
  for (const [what, r, code, msg] of bad) {
    await t.rejects(r.result, { code, message: msg }, what)
    t.ok((await r.result.catch((x: unknown) => x)) instanceof VffnError, `${what}: a VffnError`)
  }
  t.same(Array.from(await good.result), want, 'the good request is unaffected')
  t.throws(() => new GenerationEngine(m, { maxBatch: 0 }), { code: 'ERR_ARGUMENT', message: /maxBatch/ })
  t.throws(() => new GenerationEngine({} as never), { code: 'ERR_ARGUMENT', message: /^model: / })
  await e.close()
})

t.test('close: drains by default, cancel rejects with ERR_CLOSED, refuses new requests', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'dense' }))
  await alone(m, [1, 2], { maxNewTokens: 2 })
  await settle()
  const before = live()
  const e = new GenerationEngine(m, { maxBatch: 2, maxTokens: 128 })
  const rs = [1, 2, 3].map((s) => e.generate(prompt(3, s), { maxNewTokens: 6 }))
  await e.close()
  t.same((await Promise.all(rs.map((r) => r.result))).map((x) => x.length), [6, 6, 6], 'every request finished before close resolved')
  await t.rejects(e.generate([1]).result, { code: 'ERR_CLOSED' })
  const e2 = new GenerationEngine(m, { maxBatch: 1, maxTokens: 128 })
  const [a, b] = [1, 2].map((s) => e2.generate(prompt(3, s), { maxNewTokens: 50 }))
  await new Promise((r) => setImmediate(r))
  await e2.close({ cancel: true })
  await t.rejects(a.result, { code: 'ERR_CLOSED' }, 'the running one')
  await t.rejects(b.result, { code: 'ERR_CLOSED' }, 'the waiting one')
  await settle()
  t.equal(live(), before, 'both pools freed')
})

t.test('many short requests through one engine: no memory growth; timers run while streams do', async (t) => {
  const m = own(t, new TransformerLM({ ...cfg, ffn: 'versatile' }))
  const e = new GenerationEngine(m, { maxBatch: 8, maxTokens: 256 })
  await e.generate([1, 2], { maxNewTokens: 2 }).result
  await settle()
  const start = live()
  let ticks = 0
  const timer = setInterval(() => ticks++, 1)
  let made = 0
  for (let round = 0; round < 10; round++) {
    const rs = Array.from({ length: 12 }, (_, i) => e.generate(prompt(1 + (i % 5), round * 12 + i), { maxNewTokens: 3, temperature: 1, seed: i }))
    for (const r of await Promise.all(rs.map((x) => x.result))) made += r.length
  }
  clearInterval(timer)
  await settle()
  t.equal(made, 360, 'every token made')
  t.equal(live(), start, 'live memory unchanged after 120 requests')
  t.equal(e.stats().usedBlocks, 0)
  t.ok(ticks > 0, `an interval timer fired ${ticks} times while the requests ran`)
  await e.close()
})
