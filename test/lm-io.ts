// safetensors checkpoints: float32 and bfloat16 round trips are bit-exact, a file written here
// by hand to the format's spec loads, and missing or misshapen tensors fail with codes and
// leave the model unchanged.
import t from 'tap'
import { promises as fs } from 'fs'
import * as os from 'os'
import * as path from 'path'
import { tensor, TransformerLM, TransformerLMOptions, loadSafetensors, parseSafetensors } from '../lib/index'

const opts: TransformerLMOptions = { vocabSize: 19, dModel: 8, nLayers: 2, nHeads: 2, hidden: 16, maxSeqLen: 8, ffn: 'versatile', experts: 4, topK: 2, maxDepth: 2 }
const dir = t.testdir({})

async function snapshot(m: TransformerLM): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>()
  for (const [n, p] of m.parameters()) out.set(n, await p.data())
  return out
}
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)
const bf16 = (v: number) => {
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer)
  const r = u[0] + 0x7fff + ((u[0] >>> 16) & 1)
  return (r >>> 16) & 0xffff
}

t.test('float32 and bfloat16 round trips', async (t) => {
  const a = new TransformerLM({ ...opts, seed: 1 })
  const f32 = path.join(dir, 'a.safetensors')
  await a.save(f32)
  const b = new TransformerLM({ ...opts, seed: 2 })
  await b.load(f32)
  const sa = await snapshot(a), sb = await snapshot(b)
  t.equal(sb.size, 3 + 2 * 8, 'every docs/SPEC.md name')
  for (const [n, v] of sa) if (!bits(v).equals(bits(sb.get(n)!))) t.fail(`${n} differs after a float32 round trip`)
  const toks = tensor(Int32Array.from([1, 5, 7, 3]), [1, 4], { dtype: 'int32' })
  t.same(Array.from(await b.forward(toks).logits.data()), Array.from(await a.forward(toks).logits.data()), 'same logits')
  const h1 = path.join(dir, 'a16.safetensors'), h2 = path.join(dir, 'b16.safetensors')
  await a.save(h1, { dtype: 'bfloat16' })
  // the same config (metadata records it) but fresh weights: c.load must replace them all
  const c = new TransformerLM({ ...opts, seed: 1 })
  for (const p of c.parameters().values()) p.fill_(0.5)
  await c.load(h1)
  const sc = await snapshot(c)
  let bad = 0
  for (const [n, v] of sa) {
    const w = sc.get(n)!
    for (let i = 0; i < v.length; i++) {
      const u = new Uint32Array(new Float32Array([w[i]]).buffer)[0]
      if (u !== bf16(v[i]) << 16 >>> 0) bad++
    }
  }
  t.equal(bad, 0, 'bfloat16 loads as the round-to-nearest-even of the float32 values')
  await c.save(h2, { dtype: 'bfloat16' })
  t.ok((await fs.readFile(h1)).equals(await fs.readFile(h2)), 'save(load(bf16)) writes the same bytes')
  const { tensors, metadata } = await loadSafetensors(h1)
  t.equal(tensors.get('transformer.wte.weight')!.dtype, 'BF16')
  t.match(metadata['versatile-ffn.config'], /"dModel":8/)
})

t.test('a file written by hand to the spec loads', async (t) => {
  const m = new TransformerLM({ ...opts, seed: 4 })
  const shapes = [...m.parameters()].map(([n, p]) => [n, [...p.shape]] as [string, number[]])
  // reverse name order, F32 and BF16 mixed, no padding: all allowed by the format
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } }
  const chunks: Buffer[] = []
  const want = new Map<string, number[]>()
  let off = 0
  shapes.reverse().forEach(([n, shape], k) => {
    const numel = shape.reduce((a, b) => a * b, 1)
    const vals = Array.from({ length: numel }, (_, i) => Math.sin(i + k) * 0.5)
    const useBf16 = k % 2 === 1
    let buf: Buffer
    if (useBf16) {
      buf = Buffer.alloc(numel * 2)
      vals.forEach((v, i) => {
        const h = bf16(v)
        buf.writeUInt16LE(h, 2 * i)
        vals[i] = new Float32Array(new Uint32Array([h << 16 >>> 0]).buffer)[0]
      })
    } else {
      buf = Buffer.alloc(numel * 4)
      vals.forEach((v, i) => buf.writeFloatLE(v, 4 * i))
      vals.forEach((v, i) => (vals[i] = Math.fround(v)))
    }
    header[n] = { dtype: useBf16 ? 'BF16' : 'F32', shape, data_offsets: [off, off + buf.length] }
    off += buf.length
    chunks.push(buf)
    want.set(n, vals)
  })
  const json = Buffer.from(JSON.stringify(header), 'utf8')
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(json.length))
  const file = path.join(dir, 'hand.safetensors')
  await fs.writeFile(file, Buffer.concat([len, json, ...chunks]))
  await m.load(file)
  let bad = 0
  for (const [n, p] of m.parameters()) {
    const got = await p.data()
    want.get(n)!.forEach((v, i) => (bad += got[i] === v ? 0 : 1))
  }
  t.equal(bad, 0, 'every value as written')
})

t.test('missing, misshapen and malformed checkpoints', async (t) => {
  const src = new TransformerLM({ ...opts, seed: 5 })
  const sd = src.stateDict()
  const m = new TransformerLM({ ...opts, seed: 6 })
  const before = await snapshot(m)
  const { saveSafetensors } = await import('../lib/io/safetensors')
  const missing = { ...sd }
  delete missing['transformer.blocks.1.depth_predictor.weight']
  const f1 = path.join(dir, 'missing.safetensors')
  await saveSafetensors(f1, missing)
  await t.rejects(m.load(f1), { code: 'ERR_ARGUMENT', message: /missing tensor "transformer.blocks.1.depth_predictor.weight"/ })
  const f2 = path.join(dir, 'shape.safetensors')
  await saveSafetensors(f2, { ...sd, 'transformer.ln_f.weight': tensor(new Float32Array(9)) })
  await t.rejects(m.load(f2), { code: 'ERR_SHAPE', message: /"transformer.ln_f.weight" has shape \[9\], the model needs \[8\]/ })
  const after = await snapshot(m)
  let changed = 0
  for (const [n, v] of before) if (!bits(v).equals(bits(after.get(n)!))) changed++
  t.equal(changed, 0, 'a failed load changes nothing')
  t.throws(() => parseSafetensors(new Uint8Array(4)), { code: 'ERR_ARGUMENT', message: /too short/ })
  const lie = Buffer.alloc(8)
  lie.writeBigUInt64LE(1000n)
  t.throws(() => parseSafetensors(lie), { code: 'ERR_ARGUMENT', message: /exceeds the file/ })
  const hdr = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 8] } }))
  const l2 = Buffer.alloc(8)
  l2.writeBigUInt64LE(BigInt(hdr.length))
  t.throws(() => parseSafetensors(Buffer.concat([l2, hdr, Buffer.alloc(8)])), { code: 'ERR_ARGUMENT', message: /needs 16 bytes/ })
  const h3 = Buffer.from(JSON.stringify({ w: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }))
  l2.writeBigUInt64LE(BigInt(h3.length))
  t.throws(() => parseSafetensors(Buffer.concat([l2, h3, Buffer.alloc(8)])), { code: 'ERR_DTYPE' })
  await t.rejects(m.load(path.join(dir, 'nope.safetensors')), { code: 'ERR_ARGUMENT', message: /cannot read/ })
})

t.test('bfloat16 weights for inference', async (t) => {
  const a = new TransformerLM({ ...opts, seed: 8 })
  const f = path.join(dir, 'for-bf16.safetensors')
  await a.save(f)
  const b = new TransformerLM({ ...opts, seed: 9, dtype: 'bfloat16' })
  await b.load(f)
  t.equal(b.parameters().get('transformer.wte.weight')!.dtype, 'bfloat16')
  const toks = tensor(Int32Array.from([3, 1, 4, 1, 5, 9]), [2, 3], { dtype: 'int32' })
  const la = await a.forward(toks).logits.data(), lb = await b.forward(toks).logits.data()
  let err = 0, mag = 0
  for (let i = 0; i < la.length; i++) {
    err = Math.max(err, Math.abs(la[i] - lb[i]))
    mag = Math.max(mag, Math.abs(la[i]))
  }
  // bfloat16 keeps 8 bits of mantissa: weights carry ~0.4% relative error into the logits
  t.ok(err < 0.02 * mag + 1e-3, `bfloat16 logits within ${err} of float32 (max |logit| ${mag})`)
  const h1 = path.join(dir, 'b1.safetensors'), h2 = path.join(dir, 'b2.safetensors')
  await b.save(h1)
  const c = new TransformerLM({ ...opts, seed: 8, dtype: 'bfloat16' })
  await c.load(h1)
  await c.save(h2)
  const p1 = parseSafetensors(await fs.readFile(h1)).tensors, p2 = parseSafetensors(await fs.readFile(h2)).tensors
  let same = true
  for (const [n, v] of p1) same &&= Buffer.from(v.raw!.buffer).equals(Buffer.from(p2.get(n)!.raw!.buffer))
  t.ok(same, 'bfloat16 model: save, load, save keeps every bit')
  t.throws(() => b.forward(toks, { train: true }), { code: 'ERR_DTYPE', message: /inference only/ })
  t.throws(() => b.gradients(), { code: 'ERR_DTYPE' })
  const g = await b.generate([[1, 2]], { maxNewTokens: 3 })
  t.equal(g[0].length, 3, 'a bfloat16 model decodes')
})
