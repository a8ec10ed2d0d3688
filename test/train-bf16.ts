// bf16 mixed precision: one step against the float32 step on bf16-rounded weights, the compute
// copies after updates, failed steps, loads and saves, memory, a 200-step loss curve, and bad input.
import t, { Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AdamW, DenseFFN, GenerationEngine, LoopFFN, MoEFFN, Tensor, TransformerLM, TransformerLMOptions, VersatileFFN, adamwStep, device, loadCheckpoint, loadSafetensors, saveCheckpoint, tensor, trainStep, zeros } from '../lib/index'
import { computeCopyOf } from '../lib/nn/precision'
import { mulberry32 } from '../lib/random'

const small: TransformerLMOptions = { vocabSize: 29, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 8, experts: 4, topK: 2, maxDepth: 3, seed: 7 }
const B = 3, S = 8
const ids = (n: number, V: number, seed: number) => {
  const r = mulberry32(seed)
  return Int32Array.from({ length: n }, () => Math.floor(r() * V) % V)
}
const isNorm = (n: string) => /norm|ln_f/.test(n)
const dir = mkdtempSync(join(tmpdir(), 'vffn-bf16-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

// float32 -> bfloat16 -> float32, round to nearest even: the value a compute copy holds
function roundBf16(a: Float32Array): Float32Array {
  const u = new Uint32Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength))
  for (let i = 0; i < u.length; i++) u[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) << 16
  return new Float32Array(u.buffer)
}
const relErr = (got: ArrayLike<number>, want: ArrayLike<number>) => {
  let num = 0, den = 0
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2
    den += want[i] ** 2
  }
  return Math.sqrt(num / Math.max(den, 1e-30))
}
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}
async function values(m: Map<string, Tensor>): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>()
  for (const [n, p] of m) out.set(n, (await p.data()) as Float32Array)
  return out
}
// every compute copy holds exactly bf16(master); returns how many parameters have one
async function copiesMatch(t: Test, m: TransformerLM, what: string): Promise<number> {
  let n = 0, bad: string[] = []
  for (const [name, p] of m.parameters()) {
    const c = computeCopyOf(p)
    if (!c) continue
    n++
    const want = roundBf16((await p.data()) as Float32Array)
    if (maxDiff((await c.data()) as Float32Array, want) !== 0) bad.push(name)
  }
  t.same(bad, [], `${what}: every compute copy equals its master rounded to bfloat16`)
  return n
}

for (const ffn of ['versatile', 'dense', 'moe', 'loops'] as const) {
  t.test(`${ffn}: one bf16-mixed step against the float32 step on bf16-rounded weights`, async (t) => {
    const o = { ...small, ffn }
    const f32 = new TransformerLM(o), mixed = new TransformerLM({ ...o, precision: 'bf16-mixed' })
    // both start from the same weights, the matrices rounded to bfloat16 so that the float32 model
    // computes with exactly the values the mixed model's copies hold; gains stay float32 in both
    const sd: Record<string, Float32Array> = {}
    for (const [n, p] of f32.parameters()) {
      const v = (await p.data()) as Float32Array
      sd[n] = isNorm(n) ? v : roundBf16(v)
    }
    f32.loadStateDict(sd)
    mixed.loadStateDict(sd)
    const copied = await copiesMatch(t, mixed, 'after loadStateDict')
    // every matrix but the router and the loop head (float32 by design)
    const routing = [...mixed.parameters().keys()].filter((n) => /expert_gate|depth_predictor/.test(n)).length
    const matrices = [...mixed.parameters().keys()].filter((n) => !isNorm(n)).length
    t.equal(copied, matrices - routing, 'the embedding, attention, FFN and head matrices have compute copies; norms, router and loop head none')
    const tok = tensor(ids(B * S, o.vocabSize, 1), [B, S], { dtype: 'int32' })
    const tgt = ids(B * S, o.vocabSize, 2)
    const optA = new AdamW(f32.parameters(), f32.gradients(), { lr: 1e-3 })
    const optB = new AdamW(mixed.parameters(), mixed.gradients(), { lr: 1e-3 })
    // the step zeroes and fills the gradients; read them before the update lands is not needed:
    // the gradients stay in place after the step
    const rA = trainStep(f32, optA, tok, tgt, { noise: 'none' })
    const rB = trainStep(mixed, optB, tok, tgt, { noise: 'none' })
    t.same(await rB.status, { ok: true }, 'the bf16-mixed step applies')
    const [lA, lB] = [(await rA.loss.data())[0], (await rB.loss.data())[0]]
    // the forward reads the same weight values; activations are float32 in both, and the GEMMs
    // accumulate in float32 in the same order: only the widening of bf16 operands differs
    t.ok(Math.abs(lA - lB) <= 1e-6 * Math.abs(lA), `loss ${lB} equals the float32 loss ${lA} (|Δ| ${Math.abs(lA - lB).toExponential(2)} <= 1e-6 relative)`)
    const gA = await values(f32.gradients()), gB = await values(mixed.gradients())
    let worst = 0, worstName = ''
    for (const [n, g] of gA) {
      const e = relErr(gB.get(n)!, g)
      if (e > worst) [worst, worstName] = [e, n]
    }
    // backward reads the SwiGLU pre-activations saved in bfloat16 (relative rounding <= 2^-9 each,
    // about 2e-3): through silu' and the products a gradient moves by a few 1e-3 of its norm
    t.ok(worst <= 1e-2, `gradients within 1e-2 of the float32 ones (worst ${worst.toExponential(2)}, ${worstName})`)
    // MoEFFN keeps its saved pre-activations in float32 and nothing else saved is rounded, so its
    // gradients may equal the float32 ones exactly; the others read rounded pre-activations
    if (ffn !== 'moe') t.ok(worst > 0, 'and they do differ: backward read the rounded pre-activations')
    const pA = await values(f32.parameters()), pB = await values(mixed.parameters())
    // AdamW's first step moves each weight by about lr·sign(g) (plus decay): the masters agree to
    // float rounding except where a gradient near zero changed sign, which moves a weight by <= 2·lr
    let far = 0, total = 0, most = 0
    for (const [n, p] of pA) {
      const q = pB.get(n)!
      for (let i = 0; i < p.length; i++, total++) {
        const d = Math.abs(p[i] - q[i])
        most = Math.max(most, d)
        if (d > 1e-6) far++
      }
    }
    t.ok(most <= 2.001e-3, `masters after the update differ by at most 2·lr (largest ${most.toExponential(2)})`)
    t.ok(far <= 0.05 * total, `masters after the update agree (${far} of ${total} values differ by more than 1e-6; at most 5%)`)
    await copiesMatch(t, mixed, 'after the update')
    for (const m of [f32, mixed]) m.dispose()
    for (const o of [optA, optB]) o.dispose()
  })
}

t.test('a failed bf16-mixed step changes neither the masters nor their copies', async (t) => {
  const m = new TransformerLM({ ...small, precision: 'bf16-mixed' })
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
  const tok = tensor(ids(B * S, small.vocabSize, 3), [B, S], { dtype: 'int32' })
  const tgt = ids(B * S, small.vocabSize, 4)
  t.same(await trainStep(m, opt, tok, tgt).status, { ok: true }, 'a good step first (masters no longer bf16 values)')
  const before = await values(m.parameters())
  const bad = ids(B * S, small.vocabSize, 5)
  bad[4] = small.vocabSize // an id outside the vocabulary fails the embedding
  const r = trainStep(m, opt, tensor(bad, [B, S], { dtype: 'int32' }), tgt)
  const st = await r.status
  t.equal(st.ok, false, 'the step fails')
  const after = await values(m.parameters())
  let changed = 0
  for (const [n, v] of before) if (maxDiff(v, after.get(n)!) !== 0) changed++
  t.equal(changed, 0, 'no master changed')
  await copiesMatch(t, m, 'after the failed step')
  t.equal(opt.step, 1, 'the step count is back')
  m.dispose()
  opt.dispose()
})

t.test('checkpoints hold the float32 masters; loading refreshes the copies', async (t) => {
  const m = new TransformerLM({ ...small, precision: 'bf16-mixed' })
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
  const tok = tensor(ids(B * S, small.vocabSize, 6), [B, S], { dtype: 'int32' })
  for (let i = 0; i < 2; i++) t.same(await trainStep(m, opt, tok, ids(B * S, small.vocabSize, 7 + i)).status, { ok: true }, `step ${i + 1}`)
  const path = join(dir, 'mixed.safetensors')
  await m.save(path)
  const { tensors } = await loadSafetensors(path)
  const masters = await values(m.parameters())
  let notBf16 = 0, mismatched: string[] = []
  for (const [n, v] of masters) {
    const st = tensors.get(n)!
    if (st.dtype !== 'F32' || maxDiff(st.data, v) !== 0) mismatched.push(n)
    if (maxDiff(roundBf16(v), v) !== 0) notBf16++
  }
  t.same(mismatched, [], 'every tensor is written as F32 with the master values')
  t.ok(notBf16 > 0, 'and the masters are not bf16 values (so the file cannot hold the copies instead)')
  const back = await TransformerLM.fromFile(path, { precision: 'bf16-mixed' })
  t.equal(back.precision, 'bf16-mixed', 'fromFile takes the precision')
  await copiesMatch(t, back, 'fromFile')
  const plain = await TransformerLM.fromFile(path)
  t.equal(plain.precision, 'float32', 'the precision is not part of the checkpoint (default float32)')
  const other = new TransformerLM({ ...small, seed: 99, precision: 'bf16-mixed' })
  await other.load(path)
  await copiesMatch(t, other, 'load()')
  // continued pretraining in bf16-mixed from a dense model's masters
  const dense = new TransformerLM({ ...small, ffn: 'dense', precision: 'bf16-mixed' })
  const dopt = new AdamW(dense.parameters(), dense.gradients(), { lr: 1e-2 })
  t.same(await trainStep(dense, dopt, tok, ids(B * S, small.vocabSize, 9)).status, { ok: true }, 'a dense bf16-mixed step')
  const cont = await TransformerLM.fromDense(dense, { precision: 'bf16-mixed', experts: 4, topK: 2, maxDepth: 3 })
  t.equal(cont.precision, 'bf16-mixed', 'fromDense takes the precision')
  const shared = (await values(dense.parameters())).get('transformer.blocks.1.ff_proj.weight')!
  t.equal(maxDiff((await values(cont.parameters())).get('transformer.blocks.1.ff_proj.weight')!, shared), 0, 'and copies the float32 masters')
  await copiesMatch(t, cont, 'fromDense')
  // a resumable checkpoint: the moments and masters go out, and a bf16-mixed model resumes from them
  const ck = join(dir, 'run.safetensors')
  await saveCheckpoint(ck, { model: m, optimizer: opt })
  const res = new TransformerLM({ ...small, precision: 'bf16-mixed' })
  const ropt = new AdamW(res.parameters(), res.gradients(), { lr: 1e-2 })
  await loadCheckpoint(ck, { model: res, optimizer: ropt })
  t.equal(maxDiff((await values(res.parameters())).get('transformer.ff_out.weight')!, masters.get('transformer.ff_out.weight')!), 0, 'loadCheckpoint restores the masters')
  await copiesMatch(t, res, 'loadCheckpoint')
  const next = ids(B * S, small.vocabSize, 20)
  const [la, lb] = [trainStep(m, opt, tok, next), trainStep(res, ropt, tok, next)]
  t.equal((await lb.loss.data())[0], (await la.loss.data())[0], 'and the next step\'s loss is the same bit for bit')
  for (const x of [m, back, plain, other, dense, cont, res]) x.dispose()
  for (const o of [dopt, ropt]) o.dispose()
  opt.dispose()
})

t.test('generate on a bf16-mixed model decodes what its forward computes', async (t) => {
  const m = new TransformerLM({ ...small, precision: 'bf16-mixed' })
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 3e-2 })
  const tok = tensor(ids(B * S, small.vocabSize, 12), [B, S], { dtype: 'int32' })
  // a few large steps, so masters and copies differ by more than rounding noise in the logits
  for (let i = 0; i < 3; i++) t.same(await trainStep(m, opt, tok, ids(B * S, small.vocabSize, 13 + i)).status, { ok: true })
  const prompt = [3, 1, 4]
  const [gen] = await m.generate([prompt], { maxNewTokens: 4 })
  // greedy decoding by the full forward: argmax of the last position, appended, again
  const seq = [...prompt]
  for (let i = 0; i < 4; i++) {
    const out = m.forward(tensor(Int32Array.from(seq), [1, seq.length], { dtype: 'int32' }))
    const l = (await out.logits.data()) as Float32Array
    const last = l.subarray((seq.length - 1) * small.vocabSize)
    let best = 0
    for (let v = 1; v < small.vocabSize; v++) if (last[v] > last[best]) best = v
    seq.push(best)
    out.dispose()
  }
  t.same(Array.from(gen), seq.slice(prompt.length), 'greedy tokens equal the full forward\'s')
  // the first token's log-probability: a finer check than the argmax (the masters differ from the
  // copies by up to 2^-9 relative, which moved it by 2.6e-4 here; paged against full attention only
  // reorders float32 sums, ~1e-6)
  const e = new GenerationEngine(m, { maxBatch: 1, maxTokens: 16 })
  const r = e.generate(prompt, { maxNewTokens: 1 })
  await r.result
  await e.close()
  const out = m.forward(tensor(Int32Array.from(prompt), [1, prompt.length], { dtype: 'int32' }))
  const l = ((await out.logits.data()) as Float32Array).subarray((prompt.length - 1) * small.vocabSize)
  let mx = -Infinity, sum = 0
  for (const v of l) mx = Math.max(mx, v)
  for (const v of l) sum += Math.exp(v - mx)
  const want = l[seq[prompt.length]] - mx - Math.log(sum)
  t.ok(Math.abs(r.logprobs[0] - want) <= 2e-5, `log-probability ${r.logprobs[0]} equals the forward's ${want} within 2e-5`)
  out.dispose()
  m.dispose()
  opt.dispose()
})

t.test('memory: the copies add two bytes per copied value on top of the float32 masters', async (t) => {
  const dev = device('cpu')
  // queued ops hold their operands until they have run, and tensors dropped by earlier tests are
  // freed when collected: measure with the stream idle, after a collection
  const live = async () => {
    for (let i = 0; i < 3; i++) {
      ;(globalThis as { gc?: () => void }).gc?.()
      await new Promise((r) => setImmediate(r))
    }
    await dev.sync()
    return dev.memory().live
  }
  const before = await live()
  const a = new TransformerLM(small)
  const f32 = (await live()) - before
  const b = new TransformerLM({ ...small, precision: 'bf16-mixed' })
  const mixed = (await live()) - before - f32
  let copied = 0, total = 0
  for (const [, p] of b.parameters()) {
    total += p.size
    if (computeCopyOf(p)) copied += p.size
  }
  t.equal(f32, 4 * total, `float32 model: ${f32} bytes = 4 per parameter`)
  t.equal(mixed, 4 * total + 2 * copied, `bf16-mixed model: ${mixed} bytes = 4 per parameter + 2 per copied value`)
  b.dispose()
  t.equal((await live()) - before, f32, 'dispose frees the copies with the masters')
  a.dispose()
})

t.test('200 steps of the tiny model in bf16-mixed track the float32 loss curve', async (t) => {
  const cfg = TransformerLM.config('tiny', { seed: 3 })
  const Bt = 4, St = 16
  // a fixed batch the tiny model can learn: random sequences, next-token targets
  const seq = ids(Bt * (St + 1), cfg.vocabSize, 11)
  const tok = new Int32Array(Bt * St), tgt = new Int32Array(Bt * St)
  for (let b = 0; b < Bt; b++)
    for (let s = 0; s < St; s++) {
      tok[b * St + s] = seq[b * (St + 1) + s]
      tgt[b * St + s] = seq[b * (St + 1) + s + 1]
    }
  const tt = tensor(tok, [Bt, St], { dtype: 'int32' })
  const curves: number[][] = []
  for (const precision of ['float32', 'bf16-mixed'] as const) {
    const m = new TransformerLM({ ...cfg, precision })
    const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-3 })
    const losses: Tensor[] = []
    for (let s = 0; s < 200; s++) {
      const r = trainStep(m, opt, tt, tgt)
      losses.push(r.loss)
      r.gradNorm.dispose()
      for (const a of r.auxLoss) a.dispose()
    }
    const c: number[] = []
    for (const l of losses) {
      c.push((await l.data())[0])
      l.dispose()
    }
    curves.push(c)
    m.dispose()
    opt.dispose()
  }
  const [a, b] = curves
  t.ok(a[199] < 0.5 * a[0], `float32 learns (${a[0].toFixed(3)} -> ${a[199].toFixed(3)})`)
  t.ok(b[199] < 0.5 * b[0], `bf16-mixed learns (${b[0].toFixed(3)} -> ${b[199].toFixed(3)})`)
  // the curves start from the same weights up to bf16 rounding (relative 2^-9), so the first
  // losses agree closely; later the rounding of weights and saved pre-activations adds up like a
  // small change of seed, so each 20-step window's mean is compared: within 0.02 nats or 2%,
  // whichever is larger (seen: under 1e-3 nats)
  t.ok(Math.abs(a[0] - b[0]) <= 1e-3, `first losses agree: ${a[0].toFixed(5)} vs ${b[0].toFixed(5)}`)
  let worst = 0
  for (let w = 0; w < 10; w++) {
    const mean = (c: number[]) => c.slice(20 * w, 20 * w + 20).reduce((x, y) => x + y, 0) / 20
    const [ma, mb] = [mean(a), mean(b)]
    worst = Math.max(worst, Math.abs(ma - mb))
    t.ok(Math.abs(ma - mb) <= Math.max(0.02, 0.02 * ma), `steps ${20 * w}..${20 * w + 19}: mean loss ${mb.toFixed(4)} vs float32 ${ma.toFixed(4)}`)
  }
  t.comment(`largest window difference ${worst.toFixed(4)} nats`)
})

t.test('bad precision: a VffnError naming it, nothing allocated', async (t) => {
  const dev = device('cpu')
  await dev.sync()
  const before = dev.memory().live
  t.throws(() => new TransformerLM({ ...small, precision: 'fp16' as never }), { code: 'ERR_ARGUMENT', message: /precision/ }, 'TransformerLM: unknown precision')
  t.throws(() => new TransformerLM({ ...small, precision: 'bf16-mixed', dtype: 'bfloat16' }), { code: 'ERR_ARGUMENT', message: /precision.*float32/ }, 'TransformerLM: bf16-mixed needs float32 masters')
  t.throws(() => new DenseFFN({ dModel: 8, precision: 'bf16' as never }), { code: 'ERR_ARGUMENT', message: /precision/ }, 'DenseFFN: unknown precision')
  t.throws(() => new VersatileFFN({ dModel: 8, precision: 'bf16-mixed', dtype: 'bfloat16' }), { code: 'ERR_ARGUMENT', message: /precision/ }, 'VersatileFFN: bf16-mixed with bfloat16 weights')
  t.equal(dev.memory().live, before, 'nothing was allocated')
  const p = tensor(Float32Array.from([1, 2, 3]), [3]), g = tensor(Float32Array.from([1, -1, 1]), [3])
  const mm = zeros([3]), v = zeros([3])
  const h = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 }
  t.throws(() => adamwStep(p, g, mm, v, h, undefined, zeros([3])), { code: 'ERR_DTYPE', message: /copy/ }, 'adamwStep: a float32 copy')
  t.same(Array.from(await p.data()), [1, 2, 3], 'and the parameter is unchanged')
})

t.test('modules: bf16-mixed DenseFFN and VersatileFFN read bfloat16 copies of ff_proj and ff_out only', async (t) => {
  for (const M of [DenseFFN, VersatileFFN]) {
    const m = new M({ dModel: 8, hidden: 16, precision: 'bf16-mixed', ...(M === VersatileFFN ? { experts: 4 } : {}) } as never) as DenseFFN | VersatileFFN
    t.equal(m.precision, 'bf16-mixed')
    const have = m.namedParameters().filter(([, p]) => computeCopyOf(p)).map(([n]) => n)
    t.same(have, ['ff_proj.weight', 'ff_out.weight'], `${M.name}: copies of the FFN matrices`)
    for (const [, p] of m.namedParameters()) t.equal(p.dtype, 'float32')
    // the saved SwiGLU pre-activations are bfloat16
    const rec = m.forward(tensor(Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)), [3, 8]), { train: true }) as unknown as { y: Tensor; _saved: { h?: Tensor; t?: { h: Tensor } }; dispose(): void; stats: { dispose?: () => void } }
    t.equal((rec._saved.h ?? rec._saved.t!.h).dtype, 'bfloat16', `${M.name}: h saved in bfloat16`)
    if (rec._saved.t) t.equal((rec._saved.t as unknown as { widthH: Tensor }).widthH.dtype, 'bfloat16', `${M.name}: and the width path's pre-activations`)
    rec.y.dispose()
    rec.stats.dispose?.()
    rec.dispose()
    m.dispose()
  }
})

t.test('modules: bf16-mixed LoopFFN saves the pre-activations of every loop in bfloat16; MoEFFN reads copies of its experts', async (t) => {
  const x = () => tensor(Float32Array.from({ length: 24 }, (_, i) => Math.sin(i)), [3, 8])
  const loop = new LoopFFN({ dModel: 8, hidden: 16, loops: 3, precision: 'bf16-mixed' })
  t.same(loop.namedParameters().filter(([, p]) => computeCopyOf(p)).map(([n]) => n), ['ff_proj.weight', 'ff_out.weight'], 'LoopFFN: copies of the FFN matrices')
  const xl = x()
  const rl = loop.forward(xl, { train: true })
  t.same(rl._saved!.h.map((h) => h.dtype), ['bfloat16', 'bfloat16', 'bfloat16'], 'LoopFFN: h of every loop in bfloat16')
  rl.y.dispose()
  rl.dispose()
  xl.dispose()
  loop.dispose()
  const moe = new MoEFFN({ dModel: 8, experts: 4, topK: 2, expertHidden: 4, precision: 'bf16-mixed' })
  t.same(moe.namedParameters().filter(([, p]) => computeCopyOf(p)).map(([n]) => n), ['ff_proj.weight', 'ff_out.weight'], 'MoEFFN: copies of the experts, none of the router')
  const xm = x()
  const rm = moe.forward(xm, { train: true }) as unknown as { y: Tensor; stats: { dispose(): void }; auxLoss: Tensor; _saved: { t: { widthH: Tensor } }; dispose(): void }
  t.equal(rm._saved.t.widthH.dtype, 'float32', 'MoEFFN: its saved pre-activations stay float32 (docs/SPEC.md)')
  rm.y.dispose()
  rm.auxLoss.dispose()
  rm.stats.dispose()
  rm.dispose()
  xm.dispose()
  moe.dispose()
})
