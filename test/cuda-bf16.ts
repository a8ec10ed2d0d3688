// bf16 mixed precision on CUDA against the CPU on fresh random data: AdamW's fused compute-copy
// write, a VersatileFFN training forward and backward with bfloat16 saved pre-activations, and
// bf16-mixed trainSteps of a dense model. without a GPU every test skips and says why.
import t, { Test } from 'tap'
import { AdamW, Tensor, TransformerLM, VersatileFFN, adamwStep, cuda, tensor, trainStep, zeros } from '../lib/index'
import { computeCopyOf } from '../lib/nn/precision'
import { freshData } from './helpers/fresh'
import { relErr } from './helpers/data'

const SKIP = cuda.available() ? false : `no GPU here, CUDA ops cannot run: ${cuda.reason()}`
const data = freshData(9100) // fresh data on every run; data.seed is printed on failure
const fresh = data.fresh
const ints = (n: number, max: number) => Int32Array.from(fresh(n), (v) => Math.floor((v + 1) / 2 * max) % max)

async function close(t: Test, got: Tensor, want: Tensor, tol: number, what: string) {
  const e = relErr(await got.floatData(), await want.floatData())
  t.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} <= ${tol} (seed ${data.seed})`)
}
// a compute copy holds exactly its master rounded to bfloat16, on every backend
async function copyExact(t: Test, param: Tensor, what: string) {
  const c = computeCopyOf(param)
  if (!c) return t.fail(`${what}: no compute copy`)
  t.same(await c.rawData(), await param.astype('bfloat16').rawData(), `${what}: the copy is bf16(master), bit for bit`)
}

// elementwise float32 update: only rounding order differs (AdamW on both backends)
const TOL_F32 = 1e-5
// CUDA's GEMMs with bfloat16 weights round their activations to bfloat16 on load (the CPU keeps
// them float32): ~3e-3 per GEMM, chained through forward and backward of every layer
const TOL_LAYER = 1e-2
// a whole model's step: the layer error over 2 blocks, attention and the head, both ways
const TOL_MODEL = 3e-2

t.test('adamwStep writes the bf16 compute copy in the same pass', { skip: SKIP }, async (t) => {
  const n = 3001
  const p = tensor(fresh(n), [n]), g = tensor(fresh(n), [n]), m = tensor(fresh(n, 0.1), [n]), v = tensor(fresh(n).map(Math.abs), [n])
  const h = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 4 }
  const [pd, gd, md, vd] = [p, g, m, v].map((x) => x.to('cuda'))
  const c = zeros([n], { dtype: 'bfloat16' }), cd = zeros([n], { dtype: 'bfloat16', device: 'cuda' })
  adamwStep(p, g, m, v, h, undefined, c)
  adamwStep(pd, gd, md, vd, h, undefined, cd)
  await close(t, pd, p, TOL_F32, 'param')
  t.same(await cd.rawData(), await pd.astype('bfloat16').rawData(), 'the copy is the updated param rounded to nearest even')
  // a non-finite norm skips the update: the copy keeps its value like the param
  const before = await cd.rawData()
  const bad = tensor(Float32Array.from([NaN, 1]), [2], { device: 'cuda' })
  adamwStep(pd, gd, md, vd, { ...h, step: 5 }, bad, cd)
  t.same(await cd.rawData(), before, 'a skipped step leaves the copy')
})

t.test('VersatileFFN bf16-mixed: training forward and backward agree, h saved in bfloat16', { skip: SKIP }, async (t) => {
  const opts = { dModel: 64, hidden: 128, experts: 4, topK: 2, maxDepth: 3, precision: 'bf16-mixed' as const, seed: 5 }
  const c = new VersatileFFN(opts), d = new VersatileFFN({ ...opts, device: 'cuda' })
  const sd: Record<string, Float32Array> = {}
  for (const [name, p] of c.namedParameters()) sd[name] = await p.floatData()
  d.loadStateDict(sd)
  for (const [name, p] of d.namedParameters()) if (computeCopyOf(p)) await copyExact(t, p, `cuda ${name}`)
  const T = 77
  const x = tensor(fresh(T * 64), [T, 64])
  const rc = c.forward(x, { train: true, noise: 'none' }), rd = d.forward(x.to('cuda'), { train: true, noise: 'none' })
  const hd = (rd as unknown as { _saved: { t: { h: Tensor } } })._saved.t.h
  t.equal(hd.dtype, 'bfloat16', 'the saved pre-activations are bfloat16 on CUDA')
  await close(t, rd.y, rc.y, TOL_LAYER, 'y')
  const agree = relErr(await rd.stats.experts.intData(), await rc.stats.experts.intData()) === 0 &&
    relErr(await rd.stats.loops.intData(), await rc.stats.loops.intData()) === 0
  // the gradients follow the routing: compared where both backends routed alike (bf16 rounding can flip a near tie)
  if (!agree) return t.comment(`routing differs between backends (seed ${data.seed}); gradients not compared`)
  const dy = tensor(fresh(T * 64), [T, 64])
  await close(t, d.backward(rd, dy.to('cuda')), c.backward(rc, dy), TOL_LAYER, 'dx')
  for (const [name, g] of Object.entries(c.grads)) await close(t, d.grads[name], g, TOL_LAYER, `d ${name}`)
})

t.test('bf16-mixed trainSteps of a dense model agree; the copies follow the masters', { skip: SKIP }, async (t) => {
  const o = { vocabSize: 61, dModel: 64, nLayers: 2, nHeads: 4, hidden: 128, maxSeqLen: 16, ffn: 'dense' as const, precision: 'bf16-mixed' as const, seed: 2 }
  const c = new TransformerLM(o), d = new TransformerLM({ ...o, device: 'cuda' })
  const sd: Record<string, Float32Array> = {}
  for (const [n, p] of c.parameters()) sd[n] = await p.floatData()
  d.loadStateDict(sd)
  const oc = new AdamW(c.parameters(), c.gradients(), { lr: 1e-3 }), od = new AdamW(d.parameters(), d.gradients(), { lr: 1e-3 })
  const B = 3, S = 16
  for (let step = 0; step < 3; step++) {
    const tok = ints(B * S, o.vocabSize), tgt = ints(B * S, o.vocabSize)
    const rc = trainStep(c, oc, tensor(tok, [B, S], { dtype: 'int32' }), tgt)
    const rd = trainStep(d, od, tensor(tok, [B, S], { dtype: 'int32', device: 'cuda' }), tgt)
    t.same(await rd.status, { ok: true }, `step ${step}: applies on CUDA`)
    await close(t, rd.loss, rc.loss, TOL_MODEL, `step ${step}: loss`)
    const gc = c.gradients(), gd = d.gradients()
    for (const [n, g] of gc) await close(t, gd.get(n)!, g, TOL_MODEL, `step ${step}: d ${n}`)
  }
  // after three updates of about lr each the masters differ by the gradients' small differences only
  const pc = c.parameters(), pd = d.parameters()
  for (const [n, p] of pc) await close(t, pd.get(n)!, p, TOL_MODEL, `master ${n}`)
  for (const [n, p] of pd) if (computeCopyOf(p)) await copyExact(t, p, `cuda ${n}`)
})
