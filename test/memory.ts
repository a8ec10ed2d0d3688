// Deterministic memory: whatever an op or module allocates internally is freed when its results are
// disposed (or when a constructor throws), so device memory().live returns exactly to where it was,
// with no help from the garbage collector. Tiny models keep 1,000 cycles to a few seconds.
import t from 'tap'
import { DenseFFN, Tensor, VersatileFFN, device, tensor } from '../lib/index'
import { LMOutput, TransformerLM, TransformerLMOptions } from '../lib/nn/model'
import { AdamW, trainStep } from '../lib/optim/adamw'

const cpu = device('cpu')
const tiny = (ffn: 'versatile' | 'dense', over: Partial<TransformerLMOptions> = {}): TransformerLMOptions => ({
  vocabSize: 32, dModel: 16, nLayers: 1, nHeads: 2, hidden: 32, maxSeqLen: 8, ffn, experts: 4, topK: 2, maxDepth: 2, seed: 1, ...over,
})
const B = 2, S = 8
const ids = (shift: number) => tensor(Int32Array.from({ length: B * S }, (_, i) => (i * 7 + shift) % 32), [B, S], { dtype: 'int32' })

// queued ops hold their operands until they have run, so measure only once the stream is idle
async function live(): Promise<number> {
  await cpu.sync()
  return cpu.memory().live
}

/** Disposes what forward returns, as a caller would: logits, stats tensors and balance losses. */
function disposeOutput(out: LMOutput): void {
  out.logits.dispose()
  for (const s of out.stats) (s as { dispose?: () => void } | undefined)?.dispose?.()
  for (const a of out.auxLoss) if (a instanceof Tensor) a.dispose()
}

/**
 * Runs `cycle` once to warm up (lazily allocated gradients and moments stay by design), then `n`
 * times; returns the baseline, live bytes after the last cycle, and the value farthest from the
 * baseline after any cycle (so one stray tensor shows even if a collection freed older ones).
 */
async function cycles(n: number, cycle: () => void | Promise<unknown>): Promise<{ base: number; last: number; worst: number }> {
  await cycle()
  const base = await live()
  let last = base, worst = base
  for (let i = 0; i < n; i++) {
    await cycle()
    last = await live()
    if (Math.abs(last - base) > Math.abs(worst - base)) worst = last
  }
  return { base, last, worst }
}

/** Asserts that live bytes equalled `base` after every cycle. */
function atBaseline(t: Tap.Test, r: { last: number; worst: number }, base: number, what: string): void {
  t.equal(r.last, base, `${what}: live bytes after the last cycle equal the baseline`)
  t.equal(r.worst, base, `${what}: and after every cycle`)
}

const paramBytes = (m: TransformerLM) => {
  let n = 0
  for (const p of m.parameters().values()) n += p.size * (p.dtype === 'bfloat16' ? 2 : 4)
  return n
}

for (const ffn of ['versatile', 'dense'] as const) {
  t.test(`${ffn}: 1,000 forward/loss/backward cycles leave memory().live at its baseline`, async (t) => {
    const m = new TransformerLM(tiny(ffn))
    const x = ids(0), y = ids(1)
    const r = await cycles(1000, () => {
      const out = m.forward(x, { train: true, step: 3 })
      const loss = m.loss(out, y)
      m.backward(out)
      loss.dispose()
      disposeOutput(out)
    })
    atBaseline(t, r, r.base, 'forward/loss/backward')
    x.dispose()
    y.dispose()
    m.dispose()
  })

  t.test(`${ffn}: trainStep cycles leave memory().live at its baseline`, async (t) => {
    const m = new TransformerLM(tiny(ffn))
    const opt = new AdamW(m.parameters(), m.gradients())
    const x = ids(0), y = ids(1)
    let steps = 0
    const r = await cycles(500, () => {
      const res = trainStep(m, opt, x, y)
      steps++
      res.loss.dispose()
      res.gradNorm.dispose()
      for (const a of res.auxLoss) a.dispose()
    })
    t.equal(opt.step, steps, 'every cycle took a step')
    atBaseline(t, r, r.base, 'trainStep')
    opt.dispose()
    x.dispose()
    y.dispose()
    m.dispose()
  })

  t.test(`${ffn}: inference forward, lastOnly and generate (the engine's paged decoding) leave nothing live`, async (t) => {
    const m = new TransformerLM(tiny(ffn))
    const x = ids(0)
    const start = await live()
    const full = await cycles(50, () => disposeOutput(m.forward(x)))
    atBaseline(t, full, start, 'forward')
    let shape: readonly number[] = []
    const last = await cycles(50, () => {
      const out = m.forward(x, { lastOnly: true })
      shape = out.logits.shape
      disposeOutput(out)
    })
    t.same(shape, [B, 1, 32], 'lastOnly gives one row of logits per sequence')
    atBaseline(t, last, start, 'forward with lastOnly')
    let made = 0
    const gen = await cycles(50, async () => {
      const out = await m.generate([[1, 2, 3], [4, 5, 6]], { maxNewTokens: 4, temperature: 0.8, seed: 2 })
      made += out[0].length + out[1].length
    })
    t.equal(made, 51 * 8, 'generate produced every token')
    atBaseline(t, gen, start, 'generate')
    x.dispose()
    m.dispose()
  })

  t.test(`${ffn}: an inference model holds its parameters only`, async (t) => {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const before = await live()
      const m = new TransformerLM(tiny(ffn, { dtype, nLayers: 2 }))
      const params = paramBytes(m)
      t.equal((await live()) - before, params, `${dtype}: live bytes after construction are the parameters' bytes`)
      const x = ids(0)
      disposeOutput(m.forward(x))
      await m.generate([[1, 2]], { maxNewTokens: 3 })
      x.dispose()
      t.equal((await live()) - before, params, `${dtype}: still only the parameters after inference`)
      if (dtype === 'float32') {
        const g = m.gradients()
        t.equal(g.size, m.parameters().size, 'gradients() has one gradient per parameter')
        t.equal(m.gradients().get('transformer.wte.weight'), g.get('transformer.wte.weight'), 'the same gradient tensors on every call')
        t.ok((await g.get('transformer.blocks.0.att_proj.weight')!.data()).every((v) => v === 0), 'first use allocates zeros')
        t.equal((await live()) - before, 2 * params, 'float32 gradients appear on first use')
      }
      m.dispose()
      t.equal(await live(), before, `${dtype}: dispose() frees parameters and gradients`)
    }
  })
}

t.test('a training forward evaluated without backward frees its saved values on dispose()', async (t) => {
  const m = new TransformerLM(tiny('versatile'))
  const x = ids(0), y = ids(1)
  const r = await cycles(200, () => {
    const out = m.forward(x, { train: true })
    m.loss(out, y).dispose()
    out.dispose()
    t.ok(out.logits.disposed, 'dispose() frees the logits')
  })
  atBaseline(t, r, r.base, 'training forward and loss, then dispose()')
  x.dispose()
  y.dispose()
  m.dispose()
})

t.test('failed constructors leave memory().live at its baseline', async (t) => {
  const big = 2 ** 44 // a parameter of this width cannot be allocated: construction fails part way
  const modes: [string, () => unknown, string][] = [
    ['TransformerLM: dModel does not split into nHeads', () => new TransformerLM(tiny('versatile', { nHeads: 3 })), 'ERR_ARGUMENT'],
    ['TransformerLM: bad FFN option (topK > experts)', () => new TransformerLM(tiny('versatile', { nLayers: 2, topK: 5 })), 'ERR_ARGUMENT'],
    ['TransformerLM: FFN allocation fails', () => new TransformerLM(tiny('versatile', { nLayers: 2, hidden: big })), 'ERR_OOM'],
    ['TransformerLM: dense FFN allocation fails', () => new TransformerLM(tiny('dense', { hidden: big })), 'ERR_OOM'],
    ['VersatileFFN: allocation fails', () => new VersatileFFN({ dModel: 16, hidden: big, experts: 4, topK: 2, maxDepth: 2 }), 'ERR_OOM'],
    ['DenseFFN: allocation fails', () => new DenseFFN({ dModel: 16, hidden: big }), 'ERR_OOM'],
  ]
  const m = new TransformerLM(tiny('dense'))
  const params = m.parameters()
  const grads = m.gradients()
  const names = [...params.keys()]
  const missing = new Map(grads)
  missing.delete(names[names.length - 1])
  const misshapen = new Map(grads)
  misshapen.set(names[names.length - 1], grads.get('transformer.ln_f.weight')!)
  modes.push(
    ['AdamW: the last gradient is missing', () => new AdamW(params, missing), 'ERR_ARGUMENT'],
    ['AdamW: the last gradient has the wrong shape', () => new AdamW(params, misshapen), 'ERR_SHAPE'],
  )
  for (const [what, make, code] of modes) {
    const before = await live()
    let thrown = 0
    for (let i = 0; i < 100; i++) {
      try {
        make()
      } catch (e) {
        if ((e as { code?: string }).code === code) thrown++
        else throw e
      }
    }
    t.equal(thrown, 100, `${what}: throws ${code}`)
    t.equal(await live(), before, `${what}: nothing left live`)
  }
  m.dispose()
})
