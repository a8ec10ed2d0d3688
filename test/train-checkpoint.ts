// Resumable training: the optimizer's state dict, and one-file checkpoints that resume a run in a
// fresh process bit for bit; mismatched checkpoints and states are refused and change nothing.
import t from 'tap'
import { spawnSync } from 'child_process'
import { mkdtempSync, rmSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { AdamW, Tensor, TransformerLM, loadCheckpoint, loadSafetensors, saveCheckpoint, saveSafetensors, tensor } from '../lib/index'
import { CONFIG, SCHEDULE, setup, steps } from './helpers/resume-run'

const dir = mkdtempSync(join(tmpdir(), 'vffn-ckpt-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

async function snapshot(model: TransformerLM, opt: AdamW): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  for (const [n, p] of model.parameters()) out.set(n, bits(await p.data()))
  const st = opt.stateDict()
  for (const n of Object.keys(st.m)) {
    out.set(`optimizer.m.${n}`, bits(await (st.m[n] as Tensor).data()))
    out.set(`optimizer.v.${n}`, bits(await (st.v[n] as Tensor).data()))
  }
  return out
}
const sameMaps = (a: Map<string, Buffer>, b: Map<string, Buffer>) => a.size === b.size && [...a].every(([k, v]) => b.get(k)?.equals(v))

t.test('6 steps straight equal 3 steps, a checkpoint, a fresh process and 3 more, bit for bit', async (t) => {
  const straight = setup()
  const all = await steps(straight.model, straight.opt, 0, 6)
  const want = await snapshot(straight.model, straight.opt)
  t.equal(new Set(all).size, 6, 'the losses differ from step to step (the test can see a wrong step)')

  const first = setup()
  t.same(await steps(first.model, first.opt, 0, 3), all.slice(0, 3), 'the first 3 steps are the same')
  const mid = join(dir, 'mid.safetensors')
  await saveCheckpoint(mid, { model: first.model, optimizer: first.opt, schedule: SCHEDULE, extra: { position: 3, note: 'resume here' } })
  const end = join(dir, 'end.safetensors')
  const child = spawnSync(process.execPath, [...process.execArgv, join(__dirname, 'helpers', 'resume.ts'), mid, end, '6'], { encoding: 'utf8' })
  t.equal(child.status, 0, `the resumed process succeeds ${child.stderr}`)
  t.same(JSON.parse(child.stdout.trim().split('\n').pop()!), { step: 3, position: 3, schedule: SCHEDULE }, 'it restored the step, data position and schedule')
  const { tensors, metadata } = await loadSafetensors(end)
  const extra = JSON.parse(metadata['versatile-ffn.training']).extra
  t.same(extra.losses, all.slice(3), 'steps 4 to 6 give the same losses, bit for bit')
  const got = new Map([...tensors].map(([n, s]) => [n, bits(s.data)]))
  t.same([...got.keys()].sort(), [...want.keys()].sort(), 'the checkpoint holds every parameter and moment')
  t.ok(sameMaps(got, want), 'and every parameter and moment equals the straight run, bit for bit')
  t.equal(JSON.parse(metadata['versatile-ffn.optimizer']).step, 6, 'the stored step')
  t.same(JSON.parse(metadata['versatile-ffn.config']), JSON.parse(JSON.stringify({ ...CONFIG, ffn: 'versatile', dtype: 'float32', expertHidden: 8, loops: null })), 'the model config as save() writes it')

  // the weights alone load into a model, as any checkpoint's do
  const m = new TransformerLM(CONFIG)
  t.same((await m.load(end, { strict: false })).ignored.length, 2 * m.parameters().size, 'load() skips the moments')
  t.ok(bits(await m.parameters().get('transformer.wte.weight')!.data()).equals(want.get('transformer.wte.weight')!))
  for (const x of [straight, first]) {
    x.opt.dispose()
    x.model.dispose()
  }
  m.dispose()
})

t.test('the optimizer state dict round-trips and is checked all or nothing', async (t) => {
  const a = setup()
  await steps(a.model, a.opt, 0, 2)
  const st = a.opt.stateDict()
  t.equal(st.step, 2)
  t.same([st.betas, st.eps, st.weightDecay, st.maxGradNorm], [[0.9, 0.95], 1e-7, 0.1, 1])
  t.notOk(st.decays.includes('transformer.ln_f.weight'), 'norm gains do not decay')
  const b = setup()
  b.opt.loadStateDict({ ...st, m: Object.fromEntries(await Promise.all(Object.entries(st.m).map(async ([n, v]) => [n, await (v as Tensor).data()]))) })
  t.equal(b.opt.step, 2)
  const sb = b.opt.stateDict()
  for (const n of Object.keys(st.m)) {
    t.ok(bits(await (sb.m[n] as Tensor).data()).equals(bits(await (st.m[n] as Tensor).data())), `m of ${n}`)
    t.ok(bits(await (sb.v[n] as Tensor).data()).equals(bits(await (st.v[n] as Tensor).data())), `v of ${n}`)
  }
  const c = setup()
  const before = await snapshot(c.model, c.opt)
  const name = 'transformer.wte.weight'
  const { [name]: _drop, ...fewer } = st.m
  const cases: [string, unknown, RegExp, string][] = [
    ['a missing moment', { ...st, m: fewer }, /state\.m: missing moment "transformer\.wte\.weight"/, 'ERR_ARGUMENT'],
    ['an extra moment', { ...st, v: { ...st.v, 'x.weight': new Float32Array(4) } }, /state\.v: unexpected moment "x\.weight"/, 'ERR_ARGUMENT'],
    ['a misshapen moment', { ...st, v: { ...st.v, [name]: new Float32Array(3) } }, /state\.v\.transformer\.wte\.weight: expected 464 values/, 'ERR_SHAPE'],
    ['another eps', { ...st, eps: 1e-8 }, /state\.eps: the state was saved with eps 1e-8, this optimizer has 1e-7/, 'ERR_ARGUMENT'],
    ['other betas', { ...st, betas: [0.9, 0.999] }, /state\.betas: /, 'ERR_ARGUMENT'],
    ['another decay set', { ...st, decays: [...st.decays, 'transformer.ln_f.weight'] }, /state\.decays: /, 'ERR_ARGUMENT'],
    ['a negative step', { ...st, step: -1 }, /state\.step: /, 'ERR_ARGUMENT'],
  ]
  // the bad entry comes last in iteration order for the moments, so a half-applied load would show
  for (const [what, bad, message, code] of cases) t.throws(() => c.opt.loadStateDict(bad as never), { code, message }, what)
  t.ok(sameMaps(await snapshot(c.model, c.opt), before), 'no moment changed')
  t.equal(c.opt.step, 0)
  for (const x of [a, b, c]) {
    x.opt.dispose()
    x.model.dispose()
  }
})

t.test('a checkpoint that does not match the model or optimizer is refused and nothing changes', async (t) => {
  const a = setup()
  await steps(a.model, a.opt, 0, 1)
  const good = join(dir, 'good.safetensors')
  await saveCheckpoint(good, { model: a.model, optimizer: a.opt, extra: { position: 1 } })
  const { tensors, metadata } = await loadSafetensors(good)
  // a copy of the good file with some tensors changed or left out
  const variant = async (file: string, edit: (sd: Record<string, Tensor>) => void, meta = metadata) => {
    const sd: Record<string, Tensor> = {}
    for (const [n, s] of tensors) sd[n] = tensor(s.data, s.shape)
    edit(sd)
    await saveSafetensors(join(dir, file), sd, { metadata: meta })
    for (const v of Object.values(sd)) v.dispose()
    return join(dir, file)
  }
  const noMoment = await variant('no-moment.safetensors', (sd) => { delete sd['optimizer.v.transformer.ln_f.weight'] })
  const badShape = await variant('bad-shape.safetensors', (sd) => { sd['optimizer.m.transformer.blocks.1.depth_predictor.weight'] = tensor(new Float32Array(16 * 4).fill(0.5), [4, 16]) })
  const { 'versatile-ffn.optimizer': _opt, ...noOptMeta } = metadata
  const noOpt = await variant('no-opt.safetensors', () => undefined, noOptMeta)
  const target = setup()
  const eps = new AdamW(target.model.parameters(), target.model.gradients(), { lr: SCHEDULE.lr })
  const noDecay = new AdamW(target.model.parameters(), target.model.gradients(), { lr: SCHEDULE.lr, eps: 1e-7, decays: () => true })
  const other = new TransformerLM({ ...CONFIG, seed: 10 })
  const otherOpt = new AdamW(other.parameters(), other.gradients(), { eps: 1e-7 })
  await steps(target.model, target.opt, 3, 4) // not a fresh state: a partial load would show
  const before = await snapshot(target.model, target.opt)
  const cases: [string, string, TransformerLM, AdamW, RegExp, string][] = [
    ['a missing moment', noMoment, target.model, target.opt, /missing tensor "optimizer\.v\.transformer\.ln_f\.weight"/, 'ERR_ARGUMENT'],
    ['a misshapen moment', badShape, target.model, target.opt, /tensor "optimizer\.m\.transformer\.blocks\.1\.depth_predictor\.weight" has shape \[4, 16\], the model needs \[3, 16\]/, 'ERR_SHAPE'],
    ['no optimizer metadata', noOpt, target.model, target.opt, /no "versatile-ffn\.optimizer" metadata/, 'ERR_ARGUMENT'],
    ['another eps', good, target.model, eps, /optimizer\.eps: the state was saved with eps 1e-7, this optimizer has 1e-8/, 'ERR_ARGUMENT'],
    ['other decays', good, target.model, noDecay, /optimizer\.decays: /, 'ERR_ARGUMENT'],
    ['another model config', good, other, otherOpt, /model config differs from the model's in seed \(9, the model has 10\)/, 'ERR_ARGUMENT'],
  ]
  for (const [what, file, model, optimizer, message, code] of cases) await t.rejects(loadCheckpoint(file, { model, optimizer }), { code, message }, what)
  await t.rejects(loadCheckpoint(good, { model: target.model, optimizer: otherOpt }), { code: 'ERR_ARGUMENT', message: /opts\.optimizer: this optimizer updates another model's parameters/ })
  await t.rejects(saveCheckpoint(join(dir, 'x.safetensors'), { model: a.model, optimizer: a.opt, extra: { at: NaN } }), { code: 'ERR_ARGUMENT', message: /opts\.extra\.at: expected a JSON value/ })
  t.ok(sameMaps(await snapshot(target.model, target.opt), before), 'no parameter or moment changed')
  t.equal(target.opt.step, 1)
  const info = await loadCheckpoint(good, { model: target.model, optimizer: target.opt })
  t.same(info, { step: 1, extra: { position: 1 } }, 'the good file loads')
  t.ok(sameMaps(await snapshot(target.model, target.opt), await snapshot(a.model, a.opt)), 'and restores it all')
  for (const o of [a.opt, target.opt, eps, noDecay, otherOpt]) o.dispose()
  for (const m of [a.model, target.model, other]) m.dispose()
})
