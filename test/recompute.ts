// Activation recompute: 'ffn' (the FFN modules keep each loop's input, not its pre-activations)
// and 'block' (a block keeps its input and runs its forward again in backward) give the same
// outputs and gradients as keeping everything, bit for bit, and hold exactly the memory they
// say. The reference is the 'none' path, which test/ffn-versatile-grad.ts and test/lm-model.ts
// check against float64 references and finite differences; here one check also compares the
// recomputed gradients with finite differences directly.
import t from 'tap'
import { AdamW, DenseFFN, GenerationEngine, LoopFFN, MoEFFN, Tensor, _native, TransformerBlock, TransformerLM, TransformerLMOptions, VersatileFFN, cuda, device, empty, randn, tensor, trainStep } from '../lib/index'
import { CausalSelfAttention } from '../lib/nn/attention'
import { rand } from './helpers/ffn-ref'

const cpu = device('cpu')
// tensors an earlier check dropped without dispose() are freed by their finalizers: let those run
// first, then measure once the stream is idle (queued ops hold their operands until they have run)
async function live(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    ;(globalThis as { gc?: () => void }).gc?.()
    await new Promise((r) => setTimeout(r, 5))
  }
  await cpu.sync()
  return cpu.memory().live
}
const arr = async (x: Tensor) => Array.from(await x.data())

interface VCase { T: number; D: number; I: number; N: number; K: number; L: number }

type Prec = 'float32' | 'bf16-mixed'
const PRECISIONS: Prec[] = ['float32', 'bf16-mixed']

async function versatileRun(c: VCase, recompute: 'none' | 'ffn', step: number, precision: Prec = 'float32') {
  const ffn = new VersatileFFN({ dModel: c.D, hidden: c.I, experts: c.N, topK: c.K, maxDepth: c.L, seed: 3, recompute, balanceLossWeight: 0.01, precision })
  // larger weights than the 0.02 init so routing and depth spread out
  const sd: Record<string, Float32Array> = {}
  for (const [name, p] of ffn.namedParameters()) sd[name] = Float32Array.from(rand(p.size, name.length + 7, name === 'ff_norm.weight' ? 1 : 0.3))
  ffn.loadStateDict(sd)
  const x = tensor(Float32Array.from(rand(c.T * c.D, 1)), [c.T, c.D])
  const g = tensor(Float32Array.from(rand(c.T * c.D, 2)), [c.T, c.D])
  const tr = ffn.forward(x, { train: true, step, noise: 'gumbel', seed: 42 + step })
  const dx = ffn.backward(tr, g)
  const out: Record<string, number[]> = {
    y: await arr(tr.y), loops: await arr(tr.stats.loops), aux: await arr(tr.auxLoss), dx: await arr(dx),
  }
  for (const [name, gr] of Object.entries(ffn.grads)) out[name] = await arr(gr)
  for (const v of [x, g, dx, tr.y, tr.auxLoss]) v.dispose()
  tr.stats.dispose()
  ffn.dispose()
  return out
}

t.test("VersatileFFN recompute 'ffn': bit-identical outputs and gradients", async (t) => {
  // T = 5: every GEMM on the small-M path; T = 37 and 300: deep loops over a few rows (the
  // recompute widens them past the small-M path, as the forward ran), experts over 128 rows
  const cases: VCase[] = [
    { T: 5, D: 16, I: 64, N: 4, K: 2, L: 3 },
    { T: 37, D: 16, I: 64, N: 4, K: 2, L: 4 },
    { T: 300, D: 32, I: 128, N: 4, K: 2, L: 4 },
  ]
  for (const precision of PRECISIONS)
    for (const c of cases) {
      const a = await versatileRun(c, 'none', 1, precision), b = await versatileRun(c, 'ffn', 1, precision)
      t.ok(new Set(a.loops).size > 1, `${precision} T=${c.T}: tokens spread over depths (${[...new Set(a.loops)].sort().join(',')})`)
      for (const k of Object.keys(a)) t.same(b[k], a[k], `${precision} T=${c.T} ${k}: 'ffn' = 'none'`)
    }
})

t.test("bf16-mixed: the saved pre-activations are bfloat16, so gradients differ from float32's (what 'ffn' must reproduce)", async (t) => {
  // the same bfloat16 weights in both runs would still give float32-saved gradients if the
  // recompute skipped the rounding; this shows the rounding moves the gradients at all
  const c = { T: 37, D: 16, I: 64, N: 4, K: 2, L: 4 }
  const mixed = await versatileRun(c, 'none', 1, 'bf16-mixed'), f32 = await versatileRun(c, 'none', 1, 'float32')
  t.not(mixed['ff_proj.weight'].join(), f32['ff_proj.weight'].join(), 'ff_proj.weight gradients differ between the precisions')
  // the dense FFN: bf16 weights with float32 h (the module's dtype 'bfloat16', inference dtype but
  // backward still runs) against bf16-mixed (bf16 weights, bf16 h): the rounding of h alone
  const T = 29, run = async (o: { dtype?: 'bfloat16'; precision?: Prec }, recompute: 'none' | 'ffn') => {
    const ffn = new DenseFFN({ dModel: 16, hidden: 64, seed: 4, recompute, ...o })
    const x = tensor(Float32Array.from(rand(T * 16, 1)), [T, 16]), g = tensor(Float32Array.from(rand(T * 16, 2)), [T, 16])
    const tr = ffn.forward(x, { train: true })
    ffn.backward(tr, g)
    const v = await arr(ffn.grads['ff_proj.weight'])
    ffn.dispose()
    return v.join()
  }
  const roundedH = await run({ precision: 'bf16-mixed' }, 'none'), floatH = await run({ dtype: 'bfloat16' }, 'none')
  t.not(roundedH, floatH, 'bfloat16 weights: a bfloat16 h and a float32 h give different ff_proj gradients')
  t.equal(await run({ precision: 'bf16-mixed' }, 'ffn'), roundedH, "bf16-mixed 'ffn' gives the bfloat16-h gradients")
  t.equal(await run({ dtype: 'bfloat16' }, 'ffn'), floatH, "bfloat16 dtype (float32 h) 'ffn' gives the float32-h gradients")
})

t.test("VersatileFFN recompute 'ffn': gradients match central differences", async (t) => {
  // the loss l = Σ g ⊙ y with the routing and depth fixed by the noise (piecewise smooth): the
  // recomputed weight gradient of ff_proj against (l(w+h) − l(w−h))/2h in float32, tolerance 2e-2
  // relative (float32 differences with h = 1e-2 over a sum of ~1e2 terms)
  const T = 9, D = 8, I = 32
  const ffn = new VersatileFFN({ dModel: D, hidden: I, experts: 4, topK: 2, maxDepth: 3, seed: 5, recompute: 'ffn', balanceLossWeight: 0 })
  const sd: Record<string, Float32Array> = {}
  for (const [name, p] of ffn.namedParameters()) sd[name] = Float32Array.from(rand(p.size, name.length + 3, name === 'ff_norm.weight' ? 1 : 0.3))
  ffn.loadStateDict(sd)
  const xs = Float32Array.from(rand(T * D, 11)), gs = rand(T * D, 12)
  const loss = async (w: Float32Array) => {
    ffn.loadStateDict({ ...sd, 'ff_proj.weight': w })
    const r = ffn.forward(tensor(xs, [T, D]), { train: true, step: 3, seed: 9 })
    const y = await r.y.data()
    const loops = await arr(r.stats.loops)
    r.dispose()
    r.stats.dispose()
    let l = 0
    for (let i = 0; i < y.length; i++) l += gs[i] * y[i]
    return { l, loops }
  }
  ffn.loadStateDict(sd)
  const r = ffn.forward(tensor(xs, [T, D]), { train: true, step: 3, seed: 9 })
  ffn.backward(r, tensor(Float32Array.from(gs), [T, D]))
  const grad = await ffn.grads['ff_proj.weight'].data()
  const w0 = sd['ff_proj.weight']
  const base = await loss(w0)
  let checked = 0
  for (const idx of [0, 5, 37, 64 + 3, 2 * I * D - 1, I * D + 17]) {
    const h = 1e-2
    const wp = Float32Array.from(w0), wm = Float32Array.from(w0)
    wp[idx] += h
    wm[idx] -= h
    const p = await loss(wp), m = await loss(wm)
    // a perturbation that flips a routing or depth decision is not differentiable there: skip it
    if (p.loops.join() !== base.loops.join() || m.loops.join() !== base.loops.join()) continue
    const fd = (p.l - m.l) / (2 * h)
    t.ok(Math.abs(fd - grad[idx]) <= 2e-2 * Math.max(1, Math.abs(fd)), `d ff_proj.weight[${idx}]: ${grad[idx]} vs ${fd}`)
    checked++
  }
  t.ok(checked >= 4, `${checked} entries checked`)
  ffn.dispose()
})

t.test("DenseFFN recompute 'ffn': bit-identical outputs and gradients", async (t) => {
  for (const precision of PRECISIONS) for (const T of [3, 97]) {
    const run = async (recompute: 'none' | 'ffn') => {
      const ffn = new DenseFFN({ dModel: 16, hidden: 64, seed: 4, recompute, precision })
      const x = tensor(Float32Array.from(rand(T * 16, 1)), [T, 16]), g = tensor(Float32Array.from(rand(T * 16, 2)), [T, 16])
      const tr = ffn.forward(x, { train: true })
      const dx = ffn.backward(tr, g)
      const out: Record<string, number[]> = { y: await arr(tr.y), dx: await arr(dx) }
      for (const [n, gr] of Object.entries(ffn.grads)) out[n] = await arr(gr)
      ffn.dispose()
      return out
    }
    const a = await run('none'), b = await run('ffn')
    for (const k of Object.keys(a)) t.same(b[k], a[k], `${precision} T=${T} ${k}: 'ffn' = 'none'`)
  }
})

// the baselines: LoopFFN (the dense op k times) and MoEFFN (the width path's grouped GEMM)
async function baselineRun(kind: 'loops' | 'moe', T: number, recompute: 'none' | 'ffn', precision: Prec) {
  const m = kind === 'loops'
    ? new LoopFFN({ dModel: 16, hidden: 64, loops: 3, seed: 4, recompute, precision })
    : new MoEFFN({ dModel: 16, experts: 4, topK: 2, expertHidden: 24, seed: 4, recompute, precision, balanceLossWeight: 0.01 })
  const sd: Record<string, Float32Array> = {}
  for (const [name, p] of m.namedParameters()) sd[name] = Float32Array.from(rand(p.size, name.length + 5, name === 'ff_norm.weight' ? 1 : 0.3))
  m.loadStateDict(sd)
  const x = tensor(Float32Array.from(rand(T * 16, 1)), [T, 16]), g = tensor(Float32Array.from(rand(T * 16, 2)), [T, 16])
  const tr = m.forward(x, { train: true })
  const dx = m.backward(tr as never, g)
  const out: Record<string, number[]> = { y: await arr(tr.y), dx: await arr(dx) }
  if (tr.auxLoss) out.aux = await arr(tr.auxLoss)
  for (const [n, gr] of Object.entries(m.grads)) out[n] = await arr(gr)
  ;(tr.stats as { dispose?(): void }).dispose?.()
  m.dispose()
  return out
}

t.test("LoopFFN and MoEFFN recompute 'ffn': bit-identical outputs and gradients", async (t) => {
  for (const kind of ['loops', 'moe'] as const)
    for (const precision of PRECISIONS)
      for (const T of [5, 130]) {
        const a = await baselineRun(kind, T, 'none', precision), b = await baselineRun(kind, T, 'ffn', precision)
        let same = 0
        for (const k of Object.keys(a)) {
          if (b[k].join() === a[k].join()) same++
          else t.fail(`${kind} ${precision} T=${T} ${k}: 'ffn' differs from 'none'`)
        }
        t.equal(same, Object.keys(a).length, `${kind} ${precision} T=${T}: all ${same} values the same`)
      }
})

t.test("recompute 'ffn' keeps exactly the pre-activations less", async (t) => {
  const T = 40, D = 16, I = 64, N = 4, K = 2, L = 3, E = I / N
  const held = async (mk: () => VersatileFFN | DenseFFN) => {
    const m = mk()
    const x = tensor(Float32Array.from(rand(T * D, 1)), [T, D])
    const before = await live()
    const r = m.forward(x, { train: true })
    const after = await live()
    r.dispose()
    r.y.dispose()
    ;(r.stats as { dispose?(): void }).dispose?.()
    ;(r.auxLoss as Tensor | undefined)?.dispose()
    x.dispose()
    m.dispose()
    return after - before
  }
  const vo = { dModel: D, hidden: I, experts: N, topK: K, maxDepth: L }
  const vNone = await held(() => new VersatileFFN(vo)), vFfn = await held(() => new VersatileFFN({ ...vo, recompute: 'ffn' }))
  t.equal(vNone - vFfn, 4 * (L * T * 2 * I + T * K * 2 * E), `${vNone} - ${vFfn}: ` + 'VersatileFFN: h [L, T, 2I] and widthH [T·K, 2E] float32 not kept')
  const dNone = await held(() => new DenseFFN({ dModel: D, hidden: I })), dFfn = await held(() => new DenseFFN({ dModel: D, hidden: I, recompute: 'ffn' }))
  t.equal(dNone - dFfn, 4 * T * 2 * I, 'DenseFFN: h [T, 2I] float32 not kept')
  // bf16-mixed saves the pre-activations in bfloat16: 'ffn' keeps 2 bytes a value less
  const bNone = await held(() => new VersatileFFN({ ...vo, precision: 'bf16-mixed' })), bFfn = await held(() => new VersatileFFN({ ...vo, precision: 'bf16-mixed', recompute: 'ffn' }))
  t.equal(bNone - bFfn, 2 * (L * T * 2 * I + T * K * 2 * E), 'bf16-mixed VersatileFFN: h and widthH bfloat16 not kept')
  const held2 = async (mk: () => LoopFFN | MoEFFN) => held(mk as never)
  const k = 3, lo = { dModel: D, hidden: I, loops: k }
  const lNone = await held2(() => new LoopFFN(lo)), lFfn = await held2(() => new LoopFFN({ ...lo, recompute: 'ffn' }))
  t.equal(lNone - lFfn, 4 * k * T * 2 * I, 'LoopFFN: every loop\'s h [T, 2I] float32 not kept')
  const lbNone = await held2(() => new LoopFFN({ ...lo, precision: 'bf16-mixed' })), lbFfn = await held2(() => new LoopFFN({ ...lo, recompute: 'ffn', precision: 'bf16-mixed' }))
  t.equal(lbNone - lbFfn, 2 * k * T * 2 * I, 'bf16-mixed LoopFFN: every loop\'s h bfloat16 not kept')
  const mo = { dModel: D, experts: N, topK: K, expertHidden: 24 }
  const mNone = await held2(() => new MoEFFN(mo)), mFfn = await held2(() => new MoEFFN({ ...mo, recompute: 'ffn' }))
  t.equal(mNone - mFfn, 4 * T * K * 2 * 24, 'MoEFFN: widthH [T·K, 2E] float32 not kept')
})

type Kind = 'versatile' | 'dense' | 'moe' | 'loops'
const tiny = (ffn: Kind, recompute: 'none' | 'ffn' | 'block', precision: Prec = 'float32'): TransformerLMOptions => ({
  vocabSize: 48, dModel: 32, nLayers: 3, nHeads: 4, hidden: 128, maxSeqLen: 16, ffn, experts: 4, topK: 2, maxDepth: 3, loops: 2, seed: 7, recompute, precision,
})
const B = 2, S = 16
const ids = (shift: number) => tensor(Int32Array.from({ length: B * S }, (_, i) => (i * 7 + shift * 13 + ((i * i) % 5)) % 48), [B, S], { dtype: 'int32' })

async function lmRun(ffn: Kind, recompute: 'none' | 'ffn' | 'block', precision: Prec = 'float32') {
  const m = new TransformerLM(tiny(ffn, recompute, precision))
  const out = m.forward(ids(1), { train: true, step: 5 })
  const loss = m.loss(out, ids(2))
  m.backward(out)
  const res: Record<string, number[]> = { loss: await arr(loss), loops: [] }
  for (const s of out.stats) if (s) res.loops.push(...(await arr('loops' in s ? s.loops : s.experts)))
  for (const a of out.auxLoss) if (a) res.loops.push(...(await arr(a)))
  for (const [n, g] of m.gradients()) res[n] = await arr(g)
  // a second step through trainStep (AdamW, clipping) on top
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
  const st = trainStep(m, opt, ids(3), ids(4))
  res.loss2 = await arr(st.loss)
  for (const [n, p] of m.parameters()) res['param ' + n] = await arr(p)
  out.dispose()
  loss.dispose()
  opt.dispose()
  m.dispose()
  return res
}

t.test("TransformerLM recompute 'ffn' and 'block': bit-identical losses, gradients and updates, every FFN kind and precision", async (t) => {
  for (const precision of PRECISIONS)
    for (const ffn of ['versatile', 'dense', 'moe', 'loops'] as const) {
      const a = await lmRun(ffn, 'none', precision)
      for (const r of ['ffn', 'block'] as const) {
        const b = await lmRun(ffn, r, precision)
        let same = 0
        for (const k of Object.keys(a)) {
          if (b[k].join() === a[k].join()) same++
          else t.fail(`${precision} ${ffn} ${k}: '${r}' differs from 'none'`)
        }
        t.equal(same, Object.keys(a).length, `${precision} ${ffn} '${r}': ${same} values the same as 'none' (losses, gradients, stats, parameters after a trainStep)`)
      }
      t.ok(a.loss[0] > 0 && a.loss2[0] > 0, `${precision} ${ffn}: losses ${a.loss[0]}, ${a.loss2[0]}`)
    }
})

t.test("after 'block' training steps, recorded decode steps replay as the 'none' model's do", async (t) => {
  // 'block' allocates the recomputed activations lazily; once its steps are done nothing is left
  // deferred, and the engine's recorded steps (allocated while recording, replayed later) run
  const gen = async (recompute: 'none' | 'block', precision: Prec) => {
    const m = new TransformerLM(tiny('versatile', recompute, precision))
    const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
    for (let i = 0; i < 2; i++) await trainStep(m, opt, ids(i), ids(i + 1)).status
    t.equal(_native.deferAlloc(false), false, `${recompute} ${precision}: no lazy allocation left switched on after training`)
    const e = new GenerationEngine(m, { maxBatch: 2, maxTokens: 128, recordSteps: true })
    const outs = await Promise.all([[1, 2, 3], [4, 5]].map(async (p) => Array.from(await e.generate(Int32Array.from(p), { maxNewTokens: 6 }).result)))
    const st = e.stats()
    await e.close()
    opt.dispose()
    m.dispose()
    return { outs, replayed: st.replayedSteps }
  }
  for (const precision of PRECISIONS) {
    const a = await gen('none', precision), b = await gen('block', precision)
    t.ok(b.replayed > 0, `${precision}: ${b.replayed} decode steps replayed from a recording`)
    t.same(b.outs, a.outs, `${precision}: the same greedy tokens as the 'none' model`)
  }
})

t.test('memory held by a training forward, and the peak of forward + backward', async (t) => {
  // live after the forward is what backward will read; the peak spans the whole step. 'block'
  // keeps each block's input only; its recomputed activations exist one block at a time
  const run = async (recompute: 'none' | 'ffn' | 'block') => {
    const m = new TransformerLM({ ...tiny('versatile', recompute), nLayers: 4, dModel: 64, hidden: 256, nHeads: 4 })
    m.gradients()
    const x = ids(1), y = ids(2)
    const base = await live()
    cpu.resetPeakMemory()
    const out = m.forward(x, { train: true })
    const saved = (await live()) - base
    const loss = m.loss(out, y)
    m.backward(out)
    await loss.data()
    await cpu.sync()
    const peak = cpu.memory().peak - base
    out.dispose()
    loss.dispose()
    const after = await live()
    m.dispose()
    x.dispose()
    y.dispose()
    return { saved, peak, leak: after - base }
  }
  const none = await run('none'), ffn = await run('ffn'), block = await run('block')
  t.comment(`saved after forward: none ${none.saved}, ffn ${ffn.saved}, block ${block.saved}; peak: none ${none.peak}, ffn ${ffn.peak}, block ${block.peak}`)
  t.ok(ffn.saved < none.saved, "'ffn' keeps less than 'none'")
  t.ok(block.saved < ffn.saved, "'block' keeps less than 'ffn'")
  t.ok(ffn.peak < none.peak, "'ffn' peaks lower than 'none'")
  t.ok(block.peak < none.peak, "'block' peaks lower than 'none'")
  t.ok(none.peak >= none.saved && ffn.peak >= ffn.saved && block.peak >= block.saved, 'a peak is at least what was live at the end of the forward')
  for (const [k, v] of Object.entries({ none, ffn, block })) t.equal(v.leak, 0, `${k}: nothing left behind`)
})

t.test('peak memory: reset, then the most live at once', async (t) => {
  const base = await live()
  cpu.resetPeakMemory()
  t.equal(cpu.memory().peak, base, 'after a reset the peak is what is live')
  const a = tensor(new Float32Array(1000), [1000])
  const b = tensor(new Float32Array(500), [500])
  await cpu.sync()
  t.equal(cpu.memory().peak, base + 6000, 'two tensors: 6000 bytes over the base')
  a.dispose()
  b.dispose()
  const c = tensor(new Float32Array(100), [100])
  await cpu.sync()
  t.equal(cpu.memory().live, base + 400, 'live follows frees')
  t.equal(cpu.memory().peak, base + 6000, 'the peak stays until reset')
  cpu.resetPeakMemory()
  t.equal(cpu.memory().peak, base + 400, 'a reset starts from what is live')
  c.dispose()
  t.ok(cpu.memory().peak >= cpu.memory().live, 'peak >= live')
})

t.test("bad recompute values: ERR_ARGUMENT naming the option, nothing allocated", async (t) => {
  const base = await live()
  for (const bad of ['full', 'Block', 1, null, true]) {
    t.throws(() => new VersatileFFN({ dModel: 8, recompute: bad as never }), { code: 'ERR_ARGUMENT', message: /recompute/ }, `VersatileFFN ${String(bad)}`)
    t.throws(() => new DenseFFN({ dModel: 8, recompute: bad as never }), { code: 'ERR_ARGUMENT', message: /recompute/ }, `DenseFFN ${String(bad)}`)
    t.throws(() => new LoopFFN({ dModel: 8, recompute: bad as never }), { code: 'ERR_ARGUMENT', message: /recompute/ }, `LoopFFN ${String(bad)}`)
    t.throws(() => new MoEFFN({ dModel: 8, recompute: bad as never }), { code: 'ERR_ARGUMENT', message: /recompute/ }, `MoEFFN ${String(bad)}`)
    t.throws(() => new TransformerLM({ ...tiny('versatile', 'none'), recompute: bad as never }), { code: 'ERR_ARGUMENT', message: /recompute/ }, `TransformerLM ${String(bad)}`)
  }
  // a block's recompute is 'none' or 'block' ('ffn' belongs to the FFN module)
  t.throws(() => new VersatileFFN({ dModel: 8, recompute: 'block' as never }), { code: 'ERR_ARGUMENT', message: /recompute/ })
  t.equal(await live(), base, 'nothing allocated by the failed constructors')
  const ffn = new DenseFFN({ dModel: 8, hidden: 16 })
  const p = ffn.params['ff_proj.weight']
  const ap = tensor(Float32Array.from(rand(192, 1)), [24, 8]), ao = tensor(Float32Array.from(rand(64, 2)), [8, 8])
  const attn = new CausalSelfAttention(8, 2, { 'att_proj.weight': ap, 'attn_out.weight': ao }, { 'att_proj.weight': ap, 'attn_out.weight': ao })
  const w = tensor(new Float32Array(8).fill(1), [8])
  t.throws(() => new TransformerBlock(attn, ffn as never, w, undefined, { recompute: 'ffn' as never }), { code: 'ERR_ARGUMENT', message: /recompute/ })
  t.throws(() => new TransformerBlock(attn, ffn as never, w, undefined, { recompute: 'none', extra: 1 } as never), { code: 'ERR_ARGUMENT' })
  t.notOk(p.disposed, 'the modules are untouched')
  ffn.dispose()
  for (const v of [w, ap, ao]) v.dispose()
})

const NO_CUDA = cuda.available() ? false : `no CUDA device here (${cuda.reason()})`

t.test('CUDA: the allocator reports a peak; recompute ffn is not implemented there yet', { skip: NO_CUDA }, async (t) => {
  const dev = device('cuda')
  await dev.sync()
  dev.resetPeakMemory()
  const base = dev.memory()
  t.equal(base.peak, base.live, 'after a reset the peak is what is live')
  const a = empty([1 << 20], { device: 'cuda' }).fill_(1)
  await dev.sync()
  const mid = dev.memory()
  t.ok(mid.peak >= base.live + 4 * (1 << 20), `the peak covers a 4 MiB tensor (${mid.peak - base.live} bytes more)`)
  a.dispose()
  await dev.sync()
  t.equal(dev.memory().peak, mid.peak, 'the peak stays after the free')
  const ffn = new VersatileFFN({ dModel: 8, hidden: 32, experts: 4, recompute: 'ffn', device: 'cuda' })
  t.throws(() => ffn.forward(randn([4, 8]).to('cuda'), { train: true }), { code: 'ERR_UNSUPPORTED' })
  ffn.dispose()
  for (const m of [new LoopFFN({ dModel: 8, hidden: 32, recompute: 'ffn', device: 'cuda' }), new MoEFFN({ dModel: 8, experts: 4, recompute: 'ffn', device: 'cuda' })]) {
    t.throws(() => m.forward(randn([4, 8]).to('cuda'), { train: true }), { code: 'ERR_UNSUPPORTED', message: /recompute/ }, `${m.constructor.name}: ERR_UNSUPPORTED naming the option`)
    m.dispose()
  }
})
