// TransformerLM.fromDense: the shared weights are the dense model's, the router and loop head
// SPEC's init, and the first forward is the dense model with each F replaced by VersatileFFN over
// F's weights (checked against a float64 reference of that FFN); bad sources allocate nothing.
import t from 'tap'
import { mkdtempSync, rmSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { Tensor, TransformerLM, TransformerLMOptions, device, randn, saveSafetensors, tensor } from '../lib/index'
import { rmsnorm } from '../lib/nn/block'
import { VCfg, Weights, matvec, norm, versatileToken } from './helpers/ffn-ref'

const dir = mkdtempSync(join(tmpdir(), 'vffn-dense-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const denseCfg: TransformerLMOptions = { vocabSize: 21, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 8, ffn: 'dense', seed: 2 }
const B = 2, S = 5
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)
const f64 = async (x: Tensor) => Float64Array.from(await x.data())
const tokens = () => tensor(Int32Array.from({ length: B * S }, (_, i) => (i * 7 + 3) % 21), [B, S], { dtype: 'int32' })

// a dense model whose weights are larger than the 0.02 init, so every path moves the output measurably
async function denseModel(): Promise<TransformerLM> {
  const m = new TransformerLM(denseCfg)
  const sd: Record<string, Tensor> = {}
  let k = 0
  for (const [n, p] of m.parameters()) {
    const isNorm = /norm|ln_f/.test(n)
    sd[n] = randn(p.shape, { seed: 500 + k++, std: isNorm ? 0.2 : 0.3, mean: isNorm ? 1 : 0 })
  }
  m.loadStateDict(sd)
  for (const v of Object.values(sd)) v.dispose()
  return m
}

t.test('the shared weights are copied and the new ones get SPEC init from the seed', async (t) => {
  const dense = await denseModel()
  const path = join(dir, 'dense.safetensors')
  await dense.save(path)
  const vopts = { experts: 4, topK: 2, maxDepth: 3, seed: 4 }
  const fromFile = await TransformerLM.fromDense(path, vopts)
  const fromModel = await TransformerLM.fromDense(dense, vopts)
  const fresh = new TransformerLM({ ...denseCfg, ffn: 'versatile', ...vopts })
  t.equal(fromFile.config.ffn, 'versatile')
  t.same([fromFile.config.experts, fromFile.config.topK, fromFile.config.maxDepth, fromFile.config.seed, fromFile.config.balanceLossWeight], [4, 2, 3, 4, 1e-5])
  const dp = dense.parameters()
  const fp = fresh.parameters()
  const mp = fromModel.parameters()
  let shared = 0, created = 0
  for (const [n, p] of fromFile.parameters()) {
    const v = bits(await p.data())
    t.ok(v.equals(bits(await mp.get(n)!.data())), `${n}: the same from the file and from the model`)
    if (/expert_gate|depth_predictor/.test(n)) {
      created++
      t.ok(v.equals(bits(await fp.get(n)!.data())), `${n}: SPEC's init, as a new model with this seed has it`)
    } else {
      shared++
      t.ok(v.equals(bits(await dp.get(n)!.data())), `${n}: the dense model's`)
    }
  }
  t.same([shared, created], [dp.size, 2 * denseCfg.nLayers])
  for (const m of [dense, fromFile, fromModel, fresh]) m.dispose()
})

t.test('the first forward: the dense model with F replaced by VersatileFFN over its weights', async (t) => {
  const dense = await denseModel()
  const vcfg = { experts: 4, topK: 2, maxDepth: 3, seed: 6 }
  const v = await TransformerLM.fromDense(dense, vcfg)
  const x0 = tokens()
  const got = await v.forward(x0).logits.data()
  // the reference: the dense model's own attention for each block's h, then a float64 VersatileFFN, norm and head
  const dp = dense.parameters()
  const vp = v.parameters()
  const D = denseCfg.dModel, I = denseCfg.hidden, V = denseCfg.vocabSize
  const cfg: VCfg = { N: 4, K: 2, L: 3, E: 8, alpha: 0 }
  const ids = await x0.intData()
  const wte = await f64(dp.get('transformer.wte.weight')!)
  let x = new Float64Array(B * S * D)
  ids.forEach((id, i) => x.set(wte.subarray(id * D, (id + 1) * D), i * D))
  const loops = new Set<number>()
  for (let l = 0; l < denseCfg.nLayers; l++) {
    const p = `transformer.blocks.${l}.`
    const blk = dense.blocks[l]
    const xt = tensor(Float32Array.from(x), [B * S, D])
    const { out: xn } = rmsnorm(xt, blk.normWeight, false)
    const h = xt.clone()
    const a = blk.attn.forward(xn, B, S, h)
    const hv = await f64(h)
    for (const z of [xt, xn, h, a.xn, a.qkv, a.att, a.lse]) z.dispose()
    const w: Weights = {
      D, I, norm: await f64(dp.get(p + 'ff_norm.weight')!), proj: await f64(dp.get(p + 'ff_proj.weight')!), out: await f64(dp.get(p + 'ff_out.weight')!),
      router: await f64(vp.get(p + 'expert_gate.weight')!), depth: await f64(vp.get(p + 'depth_predictor.weight')!),
    }
    x = new Float64Array(B * S * D)
    for (let i = 0; i < B * S; i++) {
      const r = versatileToken(hv.subarray(i * D, (i + 1) * D), w, cfg, false, null, 1)
      loops.add(r.loops)
      x.set(r.y, i * D)
    }
  }
  const lnf = await f64(dp.get('transformer.ln_f.weight')!)
  const head = await f64(dp.get('transformer.ff_out.weight')!)
  let err = 0, scale = 0
  for (let i = 0; i < B * S; i++) {
    const ref = matvec(head, norm(x.subarray(i * D, (i + 1) * D), lnf), V)
    for (let j = 0; j < V; j++) {
      err = Math.max(err, Math.abs(got[i * V + j] - ref[j]))
      scale = Math.max(scale, Math.abs(ref[j]))
    }
  }
  t.ok(loops.size > 1, `tokens chose different depths (${[...loops].sort().join(', ')} loops): the relation is tested beyond one branch`)
  // float32 kernels against float64 through 2 blocks of up to 3 loops: ~1e-6 relative per op, 1e-4 leaves room
  t.ok(err <= 1e-4 * scale, `logits match the reference: max error ${err} of ${scale}`)
  x0.dispose()
  v.dispose()
  dense.dispose()
})

t.test('with maxDepth 1 (λ = 0) the first forward is the dense model', async (t) => {
  const dense = await denseModel()
  const v = await TransformerLM.fromDense(dense, { experts: 4, topK: 2, maxDepth: 1 })
  const x = tokens()
  const a = await dense.forward(x).logits.data()
  const b = await v.forward(x).logits.data()
  let err = 0, scale = 0
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]))
    scale = Math.max(scale, Math.abs(a[i]))
  }
  // the same math in a different kernel (the depth path's GEMMs): float32 rounding only
  t.ok(err <= 1e-5 * scale, `max difference ${err} of ${scale}`)
  x.dispose()
  v.dispose()
  dense.dispose()
})

t.test('a source that is not dense or has other sizes is refused and nothing is left allocated', async (t) => {
  const dense = await denseModel()
  const versatile = new TransformerLM({ ...denseCfg, ffn: 'versatile', experts: 4, topK: 2, maxDepth: 2 })
  const vpath = join(dir, 'versatile.safetensors')
  await versatile.save(vpath)
  const dpath = join(dir, 'dense2.safetensors')
  await dense.save(dpath)
  // a file whose config says dense but one tensor has another width
  const sd = dense.stateDict()
  const wrong = randn([3 * 16, 17], { seed: 1 })
  const bad = join(dir, 'bad-shape.safetensors')
  const { metadata } = await import('../lib/index').then((l) => l.loadSafetensors(dpath))
  await saveSafetensors(bad, { ...sd, 'transformer.blocks.1.att_proj.weight': wrong }, { metadata })
  wrong.dispose()
  // the baseline after collecting what earlier tests dropped (their finalizers run a task later),
  // so that a collection during the checks below cannot move it
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  await new Promise((r) => setImmediate(r))
  gc?.()
  await device('cpu').sync()
  const live = device('cpu').memory().live
  await t.rejects(TransformerLM.fromDense(vpath), { code: 'ERR_ARGUMENT', message: /not a dense model \(its ffn is "versatile"\)/ })
  await t.rejects(TransformerLM.fromDense(versatile), { code: 'ERR_ARGUMENT', message: /source: not a dense model/ })
  await t.rejects(TransformerLM.fromDense(dpath, { dModel: 32, hidden: 32 }), { code: 'ERR_SHAPE', message: /sizes differ from those asked: dModel 16, expected 32/ })
  await t.rejects(TransformerLM.fromDense(bad), { code: 'ERR_SHAPE', message: /tensor "transformer\.blocks\.1\.att_proj\.weight" has shape \[48, 17\], its config needs \[48, 16\]/ })
  await t.rejects(TransformerLM.fromDense(dpath, { topK: 5, experts: 4 }), { code: 'ERR_ARGUMENT', message: /topK: expected at most experts \(4\), got 5/ })
  await t.rejects(TransformerLM.fromDense(join(dir, 'missing.safetensors')), { code: 'ERR_ARGUMENT' })
  await t.rejects(TransformerLM.fromDense(dpath, { ffn: 'dense' } as never), { code: 'ERR_ARGUMENT', message: /opts\.ffn/ })
  t.equal(device('cpu').memory().live, live, 'nothing allocated is left behind')
  dense.dispose()
  versatile.dispose()
})
