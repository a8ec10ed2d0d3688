// Fuzzing the checkpoint reader from a real checkpoint: truncations at every structural point,
// byte flips over every header byte, header-length variants and hand-built structural faults.
// Each load either succeeds with exactly the stored bits or rejects with a VffnError that has a
// code and names the file, and after every rejection the model is bitwise unchanged.
import t from 'tap'
import { promises as fs, writeFileSync } from 'fs'
import * as path from 'path'
import { TransformerLM, TransformerLMOptions, VffnError, parseSafetensors } from '../lib/index'
import { mulberry32 } from '../lib/random' // deterministic, so every run fuzzes the same bytes

const opts: TransformerLMOptions = { vocabSize: 11, dModel: 4, nLayers: 1, nHeads: 2, hidden: 8, maxSeqLen: 4, ffn: 'versatile', experts: 2, topK: 1, maxDepth: 2 }
const dir = t.testdir({})
const CODES = new Set(['ERR_SHAPE', 'ERR_DTYPE', 'ERR_DEVICE', 'ERR_DISPOSED', 'ERR_OOM', 'ERR_ARGUMENT', 'ERR_UNSUPPORTED', 'ERR_CUDA', 'ERR_INTERNAL'])


type Bits = Map<string, Buffer>
async function snapshot(m: TransformerLM): Promise<Bits> {
  const out: Bits = new Map()
  for (const [n, p] of m.parameters()) out.set(n, Buffer.from((await p.data()).buffer))
  return out
}
const equal = (a: Bits, b: Bits) => a.size === b.size && [...a].every(([n, v]) => b.get(n)?.equals(v))

function withLength(file: Buffer, n: bigint): Buffer {
  const out = Buffer.from(file)
  out.writeBigUInt64LE(n, 0)
  return out
}
function build(json: string, data: Buffer): Buffer {
  const h = Buffer.from(json, 'utf8')
  return Buffer.concat([withLength(Buffer.alloc(8), BigInt(h.length)), h, data])
}

interface Case {
  name: string
  bytes: Buffer
  /** 'reject': must reject; 'accept': must load; 'either': the oracle alone decides */
  want: 'reject' | 'accept' | 'either'
  /** what a rejection's message must say */
  message?: RegExp
}

t.test('every variant loads exactly or rejects with a code, leaving the model unchanged', async (t) => {
  const src = new TransformerLM({ ...opts, seed: 1 })
  const m = new TransformerLM({ ...opts, seed: 2 })
  const base = await snapshot(m)
  const baseValues = Object.fromEntries([...m.parameters()].map(([n]) => [n, new Float32Array(base.get(n)!.buffer.slice(0))]))
  const file = path.join(dir, 'case.safetensors')
  const rand = mulberry32(20260101)
  let total = 0

  for (const dtype of ['float32', 'bfloat16'] as const) {
    const orig = path.join(dir, `orig-${dtype}.safetensors`)
    // a metadata note moves the padding through every length: keep 7 bytes of it to cut into
    let F = Buffer.alloc(0)
    for (let k = 0; k < 8; k++) {
      await src.save(orig, { dtype, metadata: { note: 'n'.repeat(k) } })
      F = await fs.readFile(orig)
      if ((Number(F.readBigUInt64LE(0)) + 8) % 8 === 0 && F.subarray(8, 8 + Number(F.readBigUInt64LE(0))).toString().endsWith(' '.repeat(7))) break
    }
    const N = Number(F.readBigUInt64LE(0))
    const text = F.subarray(8, 8 + N).toString('utf8')
    t.ok(text.endsWith(' '.repeat(7)) && !text.endsWith(' '.repeat(8)), `${dtype}: 7 bytes of padding`)
    const json = text.trimEnd()
    const h = JSON.parse(json)
    const data = F.subarray(8 + N)
    const stored: Bits = new Map([...parseSafetensors(F).tensors].map(([n, s]) => [n, Buffer.from(s.data.buffer)]))
    const names = Object.keys(h).filter((k) => k !== '__metadata__').sort((a, b) => h[a].data_offsets[0] - h[b].data_offsets[0])
    const cases: Case[] = []
    const add = (name: string, bytes: Buffer, want: Case['want'], message?: RegExp) => cases.push({ name: `${dtype}: ${name}`, bytes, want, message })
    const edit = (name: string, f: (h: any) => void, message: RegExp, pad = '') => {
      const c = JSON.parse(json)
      f(c)
      add(name, build(JSON.stringify(c) + pad, data), 'reject', message)
    }

    add('the file itself', F, 'accept')
    // truncations: inside the length field, at every header byte, at the header end, inside each tensor
    const cuts = new Set<number>()
    for (let i = 0; i < 8 + N + 1; i++) cuts.add(i)
    for (const n of names) {
      const [b, e] = h[n].data_offsets as number[]
      for (const o of [b + 1, (b + e) >> 1, e - 1]) cuts.add(8 + N + o)
    }
    cuts.add(F.length - 1)
    for (const c of cuts) add(`truncated to ${c} bytes`, F.subarray(0, c), 'reject')
    // byte flips over every header byte, each with a single-bit and a random-byte mask
    const metaText = JSON.stringify(h.__metadata__)
    const metaStart = 8 + json.indexOf(metaText), metaEnd = metaStart + metaText.length
    for (let i = 0; i < 8 + N; i++) {
      for (const mask of [1 << Math.floor(rand() * 8), 1 + Math.floor(rand() * 255)]) {
        const b = Buffer.from(F)
        b[i] ^= mask
        // inside the metadata object the text may stay valid: then the weights must load exactly
        add(`byte ${i} ^ 0x${mask.toString(16)}`, b, i > metaStart && i < metaEnd - 1 ? 'either' : 'reject')
      }
    }
    // header length variants
    const lengths = [0, 1, 2, 7, N - 7, N + 1, N + 2, N + 3, N + 8, F.length - 8, F.length - 7]
    for (let k = 1; k <= 6; k++) add(`header length N-${k} (into the padding)`, withLength(F, BigInt(N - k)), 'reject', /not indexed/)
    for (const n of lengths) add(`header length ${n}`, withLength(F, BigInt(n)), 'reject')
    for (const n of [2n ** 32n + BigInt(N), 100_000_001n, 2n ** 63n, 2n ** 64n - 1n]) add(`header length ${n}`, withLength(F, n), 'reject', /limit/)

    // structural faults, built from the header's JSON
    const [first, second] = names, last = names[names.length - 1]
    const off = (n: string) => h[n].data_offsets as number[]
    edit('overlapping offsets', (c) => (c[second].data_offsets = off(second).map((o) => o - 4)), /overlap/)
    edit('offsets past the data', (c) => (c[last].data_offsets = off(last).map((o) => o + 4)), /outside the \d+ data bytes/)
    edit('a negative offset', (c) => (c[first].data_offsets = [-4, off(first)[1]]), /-4.*non-negative integer/)
    edit('a fractional offset', (c) => (c[first].data_offsets = [0.5, off(first)[1]]), /0\.5.*non-negative integer/)
    edit('a string offset', (c) => (c[first].data_offsets = ['0', off(first)[1]]), /invalid data_offsets/)
    edit('one offset', (c) => (c[first].data_offsets = [0]), /invalid data_offsets/)
    edit('three offsets', (c) => (c[first].data_offsets = [...off(first), 0]), /invalid data_offsets/)
    edit('reversed offsets', (c) => (c[first].data_offsets = [...off(first)].reverse()), /begin is after end/)
    edit('an unsafe offset', (c) => (c[last].data_offsets = [off(last)[0], 2 ** 60]), /invalid data_offsets|outside/)
    edit('a tensor dropped, its bytes kept', (c) => delete c[second], /not indexed/)
    edit('a wrong dtype (F16)', (c) => (c[first].dtype = 'F16'), /dtype "F16"/)
    edit('a wrong dtype (I32)', (c) => (c[first].dtype = 'I32'), /dtype "I32"/)
    edit('an unknown dtype', (c) => (c[first].dtype = 'f32'), /unknown dtype "f32"/)
    edit('a numeric dtype', (c) => (c[first].dtype = 32), /dtype must be a string/)
    edit('the other float dtype', (c) => (c[first].dtype = c[first].dtype === 'F32' ? 'BF16' : 'F32'), /needs \d+ bytes/)
    edit('a shape one too long', (c) => (c[first].shape = c[first].shape.map((s: number, i: number) => (i === 0 ? s + 1 : s))), /needs \d+ bytes/)
    edit('a negative shape', (c) => (c[first].shape = [-1]), /-1.*non-negative integer/)
    edit('a fractional shape', (c) => (c[first].shape = [1.5]), /1\.5.*non-negative integer/)
    edit('a string shape', (c) => (c[first].shape = '4'), /invalid shape/)
    edit('an unsafe shape', (c) => (c[first].shape = [2 ** 60]), /invalid shape/)
    edit('an extra entry key', (c) => (c[first].foo = 'bar'), /unknown key "foo"/)
    edit('a missing entry key', (c) => delete c[first].shape, /missing shape/)
    edit('an entry that is a number', (c) => (c[first] = 1), /expected an object/)
    edit('an entry that is an array', (c) => (c[first] = [1]), /expected an object/)
    edit('a number in the metadata', (c) => (c.__metadata__.a = 1), /__metadata__\.a must be a string/)
    edit('a null in the metadata', (c) => (c.__metadata__.a = null), /__metadata__\.a must be a string/)
    edit('an object in the metadata', (c) => (c.__metadata__.a = {}), /__metadata__\.a must be a string/)
    edit('metadata that is an array', (c) => (c.__metadata__ = []), /__metadata__ must be an object/)
    edit('metadata that is a string', (c) => (c.__metadata__ = 'x'), /__metadata__ must be an object/)
    edit('a trailing newline', () => {}, /followed only by spaces/, '\n')
    edit('a trailing tab', () => {}, /followed only by spaces/, ' \t ')
    edit('a trailing zero byte', () => {}, /followed only by spaces/, '\0')
    const raw = (name: string, s: string, message: RegExp, d = data) => add(name, build(s, d), 'reject', message)
    raw('a header that is an array', '[]', /start with '\{'/)
    raw('a header that is a string', '"x"', /start with '\{'/)
    raw('a header that is null', 'null', /start with '\{'/)
    raw('an empty header', '', /start with '\{'/)
    raw('a leading space', ' ' + json, /start with '\{'/)
    raw('a byte order mark', '\ufeff' + json, /start with '\{'/)
    raw('a second closing brace', json + '}', /not valid JSON/)
    raw('a duplicate tensor', json.replace(/}$/, `,${JSON.stringify(first)}:${JSON.stringify(h[first])}}`), /twice/)
    raw('a duplicate spelled with an escape', json.replace(/}$/, `,"\\u${first.charCodeAt(0).toString(16).padStart(4, '0')}${first.slice(1)}":${JSON.stringify(h[first])}}`), /twice/)
    raw('a duplicate dtype key', json.replace(`"dtype":"${h[first].dtype}"`, `"dtype":"${h[first].dtype}","dtype":"${h[first].dtype}"`), /duplicate key "dtype"/)
    raw('an integer written 8.0', json.replace(`"data_offsets":[0,`, '"data_offsets":[0.0,'), /0\.0.*non-negative integer/)
    raw('an integer written with an exponent', json.replace(`"shape":[${h[first].shape[0]}`, `"shape":[${h[first].shape[0]}e0`), /e0.*non-negative integer/)
    add('trailing unindexed bytes', Buffer.concat([F, Buffer.from([0, 0, 128, 63])]), 'reject', /4 trailing bytes/)
    const hb = Buffer.from(json)
    {
      const bad = Buffer.from(hb)
      bad[json.indexOf('"pt"') + 1] = 0xff
      add('invalid UTF-8 in the metadata', Buffer.concat([withLength(Buffer.alloc(8), BigInt(bad.length)), bad, data]), 'reject', /UTF-8/)
    }
    {
      // one tensor taken out with its bytes: the parser is content, the model misses it
      const c = JSON.parse(json)
      const [b, e] = off(second)
      delete c[second]
      for (const n of names) if (c[n] && c[n].data_offsets[0] >= e) c[n].data_offsets = c[n].data_offsets.map((o: number) => o - (e - b))
      add('a missing tensor', build(JSON.stringify(c), Buffer.concat([data.subarray(0, b), data.subarray(e)])), 'reject', new RegExp(`missing tensor "${second.replace(/\./g, '\\.')}"`))
      edit('a misshapen tensor', (c) => (c[first].shape = [1, ...c[first].shape]), /has shape/)
    }
    // what the format allows must still load
    add('no padding', build(json, data), 'accept')
    add('64 spaces of padding', build(json + ' '.repeat(64), data), 'accept')
    add('whitespace inside the JSON', build(JSON.stringify(h, null, 2), data), 'accept')
    add('no metadata', build(JSON.stringify({ ...h, __metadata__: undefined }), data), 'accept')
    add('an escaped name', build(json.replace(`"${first}"`, `"\\u${first.charCodeAt(0).toString(16).padStart(4, '0')}${first.slice(1)}"`), data), 'accept')
    {
      // the data in reverse tensor order, offsets to match
      const c = JSON.parse(json)
      const chunks: Buffer[] = []
      let o = 0
      for (const n of [...names].reverse()) {
        const [b, e] = off(n)
        chunks.push(data.subarray(b, e))
        c[n].data_offsets = [o, o + e - b]
        o += e - b
      }
      add('tensors stored in reverse order', build(JSON.stringify(c), Buffer.concat(chunks)), 'accept')
    }

    const bad: string[] = []
    let accepted = 0, flipsLoaded = 0
    for (const c of cases) {
      writeFileSync(file, c.bytes) // sync: thousands of small writes, each much faster than a promise round trip
      let err: unknown
      try {
        await m.load(file)
      } catch (e) {
        err = e
      }
      if (err === undefined) {
        accepted++
        if (c.want === 'either') flipsLoaded++
        if (c.want === 'reject') bad.push(`${c.name}: loaded`)
        if (!equal(await snapshot(m), stored)) bad.push(`${c.name}: loaded other values than stored`)
        m.loadStateDict(baseValues)
        continue
      }
      if (!(err instanceof VffnError) || !CODES.has(err.code)) bad.push(`${c.name}: threw ${String(err)} without a code`)
      else if (!err.message.includes(JSON.stringify(file))) bad.push(`${c.name}: the message does not name the file: ${err.message}`)
      else if (c.message && !c.message.test(err.message)) bad.push(`${c.name}: message ${JSON.stringify(err.message)} does not match ${c.message}`)
      if (c.want === 'accept') bad.push(`${c.name}: rejected: ${(err as Error).message}`)
      if (!equal(await snapshot(m), base)) {
        bad.push(`${c.name}: the model changed`)
        m.loadStateDict(baseValues)
      }
    }
    total += cases.length
    t.same(bad, [], `${dtype}: ${cases.length} variants, ${accepted} loaded`)
    t.ok(flipsLoaded > 0, `${dtype}: ${flipsLoaded} metadata flips loaded, each checked bit for bit`)
  }
  t.ok(total > 4000, `${total} variants in all`)
})
