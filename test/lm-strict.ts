// Strict checkpoints and all-or-nothing loads: each case below is a way a checkpoint or a state
// dict used to load wrong weights or half of them; fromFile rebuilds a model from its metadata.
import t from 'tap'
import { promises as fs } from 'fs'
import * as path from 'path'
import { DenseFFN, Tensor, TransformerLM, TransformerLMOptions, VersatileFFN, VffnError, parseSafetensors, saveSafetensors, tensor, zeros } from '../lib/index'

const opts: TransformerLMOptions = { vocabSize: 13, dModel: 8, nLayers: 2, nHeads: 2, hidden: 16, maxSeqLen: 8, ffn: 'versatile', experts: 4, topK: 2, maxDepth: 2 }
const dir = t.testdir({})

async function snapshot(m: TransformerLM): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  for (const [n, p] of m.parameters()) {
    const v = p.dtype === 'bfloat16' ? await p.rawData() : await p.data()
    out.set(n, Buffer.from(v.buffer, v.byteOffset, v.byteLength))
  }
  return out
}
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
/** names whose bits differ between two snapshots */
function diff(a: Map<string, Buffer>, b: Map<string, Buffer>): string[] {
  const names = new Set([...a.keys(), ...b.keys()])
  return [...names].filter((n) => !a.get(n) || !b.get(n) || !a.get(n)!.equals(b.get(n)!))
}
/** the file's header length and JSON text */
function header(file: Buffer): { n: number; json: string } {
  const n = Number(file.readBigUInt64LE(0))
  return { n, json: file.subarray(8, 8 + n).toString('utf8') }
}
/** a file from header JSON text and data bytes */
function build(json: string, data: Buffer): Buffer {
  const h = Buffer.from(json, 'utf8')
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(h.length))
  return Buffer.concat([len, h, data])
}

// takes a thunk: the load must start after the snapshot, and its rejection must find a handler at once
async function rejectsUnchanged(t: Tap.Test, m: TransformerLM, load: () => Promise<unknown>, want: { code: string; message: RegExp }, what: string) {
  const before = await snapshot(m)
  await t.rejects(load(), want, what)
  t.same(diff(before, await snapshot(m)), [], `${what}: model unchanged`)
}

t.test('a header length cut into the padding rejects instead of shifting every weight', async (t) => {
  const src = new TransformerLM({ ...opts, seed: 1 })
  const m = new TransformerLM({ ...opts, seed: 2 })
  const f = path.join(dir, 'pad.safetensors')
  // a metadata note of 0..7 characters moves the padding through every length; keep the longest
  let file = Buffer.alloc(0), best = -1
  for (let k = 0; k < 8; k++) {
    await src.save(f, { metadata: { note: 'x'.repeat(k) } })
    const b = await fs.readFile(f), j = header(b).json
    if (j.length - j.trimEnd().length > best) [file, best] = [b, j.length - j.trimEnd().length]
  }
  const { n } = header(file)
  t.equal(best, 7, 'the saved header has 7 bytes of padding to cut into')
  for (let k = 1; k <= 6; k++) {
    const g = path.join(dir, `pad-${k}.safetensors`)
    const cut = Buffer.from(file)
    cut.writeBigUInt64LE(BigInt(n - k), 0)
    await fs.writeFile(g, cut)
    await rejectsUnchanged(t, m, () => m.load(g), { code: 'ERR_ARGUMENT', message: /not indexed|data bytes/ }, `header length N-${k}`)
  }
})

t.test('duplicate names reject', async (t) => {
  const src = new TransformerLM({ ...opts, seed: 3 })
  const m = new TransformerLM({ ...opts, seed: 4 })
  const f = path.join(dir, 'dup-src.safetensors')
  await src.save(f)
  const file = await fs.readFile(f)
  const { n, json } = header(file)
  // a second "transformer.ln_f.weight" entry pointing at the first block's attn_norm bytes: same shape, other values
  const h = JSON.parse(json)
  const other = h['transformer.blocks.0.attn_norm.weight']
  const dup = json.trimEnd().replace(/}$/, `,"transformer.ln_f.weight":${JSON.stringify(other)}}`)
  const g = path.join(dir, 'dup.safetensors')
  await fs.writeFile(g, build(dup, file.subarray(8 + n)))
  await rejectsUnchanged(t, m, () => m.load(g), { code: 'ERR_ARGUMENT', message: /"transformer.ln_f.weight".*twice|duplicate.*"transformer.ln_f.weight"/ }, 'a duplicate tensor')
  const data = Buffer.alloc(16)
  for (let i = 0; i < 4; i++) data.writeFloatLE(i + 0.5, 4 * i)
  t.throws(() => parseSafetensors(build('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', data)),
    { code: 'ERR_ARGUMENT', message: /"w"/ }, 'parser: duplicate names')
  t.throws(() => parseSafetensors(build('{"w":{"dtype":"F32","shape":[4],"shape":[4],"data_offsets":[0,16]}}', data)),
    { code: 'ERR_ARGUMENT', message: /"w".*"shape"|"shape".*"w"/ }, 'parser: a duplicate key inside an entry')
  t.throws(() => parseSafetensors(build('{"__metadata__":{"a":"1","a":"2"},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', data)),
    { code: 'ERR_ARGUMENT', message: /"a"/ }, 'parser: a duplicate metadata key')
  t.throws(() => parseSafetensors(build('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"\\u0077":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', data)),
    { code: 'ERR_ARGUMENT', message: /"w"/ }, 'parser: a duplicate spelled with an escape')
})

t.test('bytes no tensor indexes reject', async (t) => {
  const src = new TransformerLM({ ...opts, seed: 5 })
  const m = new TransformerLM({ ...opts, seed: 6 })
  const f = path.join(dir, 'trail-src.safetensors')
  await src.save(f)
  const file = await fs.readFile(f)
  const g = path.join(dir, 'trail.safetensors')
  await fs.writeFile(g, Buffer.concat([file, Buffer.from([1, 2, 3, 4])]))
  await rejectsUnchanged(t, m, () => m.load(g), { code: 'ERR_ARGUMENT', message: /4 trailing bytes|not indexed/ }, 'trailing bytes')
  // a hole: every tensor from the second on moved 4 bytes later
  const { n, json } = header(file)
  const h = JSON.parse(json)
  const names = Object.keys(h).filter((k) => k !== '__metadata__').sort((a, b) => h[a].data_offsets[0] - h[b].data_offsets[0])
  const data = file.subarray(8 + n)
  const cut = h[names[0]].data_offsets[1]
  for (const k of names.slice(1)) h[k].data_offsets = h[k].data_offsets.map((o: number) => o + 4)
  const hole = path.join(dir, 'hole.safetensors')
  await fs.writeFile(hole, build(JSON.stringify(h), Buffer.concat([data.subarray(0, cut), Buffer.alloc(4), data.subarray(cut)])))
  await rejectsUnchanged(t, m, () => m.load(hole), { code: 'ERR_ARGUMENT', message: new RegExp(`bytes ${cut}\\.\\.${cut + 4}.*not indexed`) }, 'a hole between tensors')
})

t.test('extra tensors reject unless strict: false, which names them', async (t) => {
  const two = new TransformerLM({ ...opts, seed: 7 })
  const one = new TransformerLM({ ...opts, nLayers: 1, seed: 8 })
  const f = path.join(dir, 'two.safetensors')
  await two.save(f)
  const extra = [...two.parameters().keys()].filter((k) => k.startsWith('transformer.blocks.1.'))
  t.equal(extra.length, 8)
  const before = await snapshot(one)
  const err = await one.load(f).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof VffnError && err.code === 'ERR_ARGUMENT', '2-layer checkpoint into a 1-layer model rejects')
  const msg = (err as Error).message
  t.same(extra.filter((k) => !msg.includes(JSON.stringify(k))), [], 'the message names every extra tensor')
  t.ok(msg.includes(JSON.stringify(f)), 'and the file')
  t.same(diff(before, await snapshot(one)), [], 'model unchanged')
  const r = await one.load(f, { strict: false })
  t.same(r.ignored.sort(), extra.sort(), 'strict: false says what it ignored')
  const s2 = await snapshot(two), s1 = await snapshot(one)
  t.same([...s1.keys()].filter((k) => !s1.get(k)!.equals(s2.get(k)!)), [], 'every tensor the model has is loaded')

  const vers = new TransformerLM({ ...opts, seed: 9 })
  const dense = new TransformerLM({ ...opts, ffn: 'dense', seed: 10 })
  const fv = path.join(dir, 'vers.safetensors')
  await vers.save(fv)
  const router = [0, 1].flatMap((i) => [`transformer.blocks.${i}.depth_predictor.weight`, `transformer.blocks.${i}.expert_gate.weight`])
  const d0 = await snapshot(dense)
  const e2 = await dense.load(fv).then(() => undefined, (e: unknown) => e)
  t.ok(e2 instanceof VffnError && e2.code === 'ERR_ARGUMENT', 'a VersatileFFN checkpoint into a dense model rejects')
  t.same(router.filter((k) => !(e2 as Error).message.includes(JSON.stringify(k))), [], 'naming every router and depth head')
  t.same(diff(d0, await snapshot(dense)), [], 'model unchanged')
  t.same((await dense.load(fv, { strict: false })).ignored.sort(), router.sort())
  const fd = path.join(dir, 'dense.safetensors')
  await dense.save(fd)
  const e3 = await vers.load(fd).then(() => undefined, (e: unknown) => e)
  t.same(router.filter((k) => !(e3 as Error).message.includes(JSON.stringify(k))), [], 'a dense checkpoint into VersatileFFN names every missing tensor')
  t.same((await vers.load(fv)).ignored, [], 'an exact checkpoint ignores nothing')
})

t.test('loadStateDict checks every entry before changing any', async (t) => {
  const m = new TransformerLM({ ...opts, seed: 11 })
  const src = new TransformerLM({ ...opts, seed: 12 })
  const names = [...m.parameters().keys()]
  const last = names[names.length - 1]
  const bad: Record<string, Tensor> = { ...src.stateDict(), [last]: zeros([...src.parameters().get(last)!.shape], { dtype: 'int32' }) }
  const before = await snapshot(m)
  t.throws(() => m.loadStateDict(bad), { code: 'ERR_DTYPE', message: new RegExp(esc(last)) }, 'an int32 last entry')
  t.same(diff(before, await snapshot(m)), [], 'model unchanged')
  const gone = src.parameters().get(last)!.clone()
  gone.dispose()
  t.throws(() => m.loadStateDict({ ...src.stateDict(), [last]: gone }), { code: 'ERR_DISPOSED' }, 'a disposed last entry')
  t.throws(() => m.loadStateDict({ ...src.stateDict(), junk: new Float32Array(3), more: new Float32Array(1) }), { code: 'ERR_ARGUMENT', message: /"junk".*"more"/ }, 'extras named')
  const { [names[0]]: _a, [last]: _b, ...partial } = src.stateDict()
  t.throws(() => m.loadStateDict(partial), { code: 'ERR_ARGUMENT', message: new RegExp(`${esc(JSON.stringify(names[0]))}.*${esc(JSON.stringify(last))}`) }, 'every missing name')
  t.throws(() => m.loadStateDict(null as never), { code: 'ERR_ARGUMENT' })
  t.throws(() => m.loadStateDict(src.stateDict(), { strict: 'no' as never }), { code: 'ERR_ARGUMENT', message: /strict/ })
  t.same(diff(before, await snapshot(m)), [], 'model unchanged after every rejection')
  t.same(m.loadStateDict({ ...src.stateDict(), junk: new Float32Array(3) }, { strict: false }).ignored, ['junk'])
  t.same(diff(await snapshot(src), await snapshot(m)), [], 'then a good dict loads')

  // two same-shaped entries swapped: each must receive the other's old value
  const a = 'transformer.blocks.0.attn_out.weight', b = 'transformer.blocks.1.attn_out.weight'
  const s0 = await snapshot(m)
  m.loadStateDict({ ...m.stateDict(), [a]: m.parameters().get(b)!, [b]: m.parameters().get(a)! })
  const s1 = await snapshot(m)
  t.ok(s1.get(a)!.equals(s0.get(b)!) && s1.get(b)!.equals(s0.get(a)!), 'swapping two live parameters swaps them')
  m.dispose()
  t.throws(() => m.loadStateDict(src.stateDict()), { code: 'ERR_DISPOSED' }, 'a disposed model')
})

t.test('module loadStateDict: all names, all or nothing', async (t) => {
  const f = new VersatileFFN({ dModel: 8, hidden: 16, experts: 4, topK: 2, maxDepth: 2, seed: 1 })
  const g = new VersatileFFN({ dModel: 8, hidden: 16, experts: 4, topK: 2, maxDepth: 2, seed: 2 })
  const read = async () => Promise.all(f.parameters().map(async (p) => Buffer.from((await p.data()).buffer)))
  const before = await read()
  const sd = g.stateDict()
  t.throws(() => f.loadStateDict({ ...sd, 'depth_predictor.weight': zeros([2, 8], { dtype: 'int32' }) }), { code: 'ERR_DTYPE' })
  t.throws(() => f.loadStateDict({ ...sd, a: new Float32Array(1), b: new Float32Array(1) }), { code: 'ERR_ARGUMENT', message: /unexpected names "a", "b"/ })
  const { 'ff_norm.weight': _n, 'depth_predictor.weight': _d, ...partial } = sd
  t.throws(() => f.loadStateDict(partial), { code: 'ERR_ARGUMENT', message: /missing "ff_norm.weight".*"depth_predictor.weight"/ })
  const after = await read()
  t.same(after.filter((b, i) => !b.equals(before[i])).length, 0, 'nothing changed')
  t.same(f.loadStateDict({ ...sd, extra: new Float32Array(1) }, { strict: false }).ignored, ['extra'])
  const d = new DenseFFN({ dModel: 8, hidden: 16 })
  t.throws(() => d.loadStateDict(sd), { code: 'ERR_ARGUMENT', message: /"expert_gate.weight", "depth_predictor.weight"/ }, 'a versatile dict into a dense module')
})

t.test('backward and zeroGrad check what they touch before changing a gradient', async (t) => {
  const m = new TransformerLM({ ...opts, seed: 13 })
  const grads = async () => new Map(await Promise.all([...m.gradients()].map(async ([n, g]) => [n, Buffer.from((await g.data()).buffer)] as [string, Buffer])))
  const toks = tensor(Int32Array.from([1, 5, 7, 3, 2, 9]), [2, 3], { dtype: 'int32' })
  const tgt = tensor(Int32Array.from([5, 7, 3, 2, 9, 4]), [2, 3], { dtype: 'int32' })
  const warm = m.forward(toks, { train: true, noise: 'none' })
  m.loss(warm, tgt)
  m.backward(warm)
  const before = await grads()
  t.ok([...before.values()].some((b) => new Float32Array(b.buffer).some((v) => v !== 0)), 'the gradients hold values to lose')
  const out = m.forward(toks, { train: true, noise: 'none' })
  m.loss(out, tgt)
  // blocks run backward last to first: block 0's stats are read after everything else accumulated
  ;(out.stats[0] as { dispose(): void }).dispose()
  t.throws(() => m.backward(out), { code: 'ERR_DISPOSED', message: /stats\[0\]/ })
  t.same(diff(before, await grads()), [], 'no gradient changed')
  t.throws(() => m.backward(out, NaN), { code: 'ERR_ARGUMENT', message: /dloss/ })
  const last = [...m.gradients().keys()].pop()!
  m.gradients().get(last)!.dispose()
  t.throws(() => m.zeroGrad(), { code: 'ERR_DISPOSED', message: new RegExp(esc(last)) })
  const after = await Promise.all([...m.gradients()].filter(([n]) => n !== last).map(async ([n, g]) => before.get(n)!.equals(Buffer.from((await g.data()).buffer))))
  t.ok(after.every(Boolean), 'zeroGrad cleared nothing')
})

t.test('fromFile rebuilds the model from its metadata, bit for bit', async (t) => {
  const cases: [string, TransformerLMOptions][] = [
    ['versatile float32', { ...opts, seed: 21, expertHidden: 3, balanceLossWeight: 0.25 }],
    ['versatile bfloat16', { ...opts, seed: 22, dtype: 'bfloat16' }],
    ['dense float32', { ...opts, ffn: 'dense', seed: 23 }],
    ['dense bfloat16', { ...opts, ffn: 'dense', nLayers: 1, seed: 24, dtype: 'bfloat16' }],
  ]
  for (const [what, o] of cases) {
    const a = new TransformerLM(o)
    const f = path.join(dir, `ff-${what.replace(' ', '-')}.safetensors`)
    await a.save(f)
    const b = await TransformerLM.fromFile(f)
    t.same(b.config, a.config, `${what}: same config`)
    t.equal(b.blocks.length, a.blocks.length)
    t.same(diff(await snapshot(a), await snapshot(b)), [], `${what}: same bits`)
    const toks = tensor(Int32Array.from([1, 5, 7, 3, 2]), [1, 5], { dtype: 'int32' })
    t.same(Array.from(await b.forward(toks).logits.data()), Array.from(await a.forward(toks).logits.data()), `${what}: same logits`)
  }
  const a = new TransformerLM({ ...opts, seed: 25 })
  const f = path.join(dir, 'ff-cast.safetensors')
  await a.save(f)
  const b = await TransformerLM.fromFile(f, { dtype: 'bfloat16', device: 'cpu' })
  t.equal(b.config.dtype, 'bfloat16', 'dtype overrides the stored one')
  const want = a.parameters().get('transformer.wte.weight')!.astype('bfloat16')
  t.ok(Buffer.from((await want.rawData()).buffer).equals(Buffer.from((await b.parameters().get('transformer.wte.weight')!.rawData()).buffer)), 'rounded as astype rounds')
})

t.test('fromFile rejects files without a usable config', async (t) => {
  const a = new TransformerLM({ ...opts, seed: 26 })
  const sd = a.stateDict()
  const cfg = JSON.parse(JSON.stringify({ ...a.config }))
  const write = async (name: string, metadata?: Record<string, string>) => {
    const f = path.join(dir, name)
    await saveSafetensors(f, sd, { metadata })
    return f
  }
  await t.rejects(TransformerLM.fromFile(await write('nometa.safetensors')), { code: 'ERR_ARGUMENT', message: /versatile-ffn\.config/ }, 'no metadata')
  await t.rejects(TransformerLM.fromFile(await write('notjson.safetensors', { 'versatile-ffn.config': '{dModel: 8' })), { code: 'ERR_ARGUMENT', message: /JSON/ })
  await t.rejects(TransformerLM.fromFile(await write('array.safetensors', { 'versatile-ffn.config': '[1]' })), { code: 'ERR_ARGUMENT', message: /object/ })
  const { topK: _k, maxDepth: _l, ...missing } = cfg
  await t.rejects(TransformerLM.fromFile(await write('missing.safetensors', { 'versatile-ffn.config': JSON.stringify(missing) })),
    { code: 'ERR_ARGUMENT', message: /missing.*"topK".*"maxDepth"/ }, 'missing keys named')
  await t.rejects(TransformerLM.fromFile(await write('unknown.safetensors', { 'versatile-ffn.config': JSON.stringify({ ...cfg, colour: 'red', size: 3 }) })),
    { code: 'ERR_ARGUMENT', message: /unknown.*"colour".*"size"/ }, 'unknown keys named')
  await t.rejects(TransformerLM.fromFile(await write('badval.safetensors', { 'versatile-ffn.config': JSON.stringify({ ...cfg, dModel: 'eight' }) })),
    { code: 'ERR_ARGUMENT', message: /dModel/ }, 'a bad value named')
  await t.rejects(TransformerLM.fromFile(await write('other.safetensors', { 'versatile-ffn.config': JSON.stringify({ ...cfg, dModel: 16 }) })),
    { code: 'ERR_SHAPE' }, 'a config that does not match the tensors')
  await t.rejects(TransformerLM.fromFile(path.join(dir, 'absent.safetensors')), { code: 'ERR_ARGUMENT', message: /cannot read/ })
  await t.rejects(TransformerLM.fromFile(await write('ok.safetensors', { 'versatile-ffn.config': JSON.stringify(cfg) }), { dtype: 'int32' as never }), { code: 'ERR_DTYPE' })
  t.ok(await TransformerLM.fromFile(path.join(dir, 'ok.safetensors')), 'the config as save() writes it loads')
})
