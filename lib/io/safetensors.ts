// safetensors checkpoints (the format PyTorch tooling reads): an 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?:
// {string: string}}, then the raw little-endian tensor bytes, offsets relative to the end of the
// header. We read and write F32 and BF16 (BF16 loads exactly into float32).
import { promises as fs } from 'fs'
import { fail, show } from '../errors'
import { dirname } from 'path'
import { Tensor } from '../tensor'
import { scanHeaderTokens } from './json_scan'
import { arg, checkOptions, dtype, instance, optional, string, stringRecord } from '../validate'

export type SafetensorsDType = 'F32' | 'BF16'

export interface StoredTensor {
  dtype: SafetensorsDType
  shape: number[]
  /** the stored values as float32 (bf16 widened exactly) */
  data: Float32Array
  /** the stored bits for BF16 tensors */
  raw?: Uint16Array
}

export interface SaveOptions {
  /** dtype of every tensor in the file. Default 'float32'. */
  dtype?: 'float32' | 'bfloat16'
  metadata?: Record<string, string>
}

const ALIGN = 8

const SAVE_OPTIONS = { dtype: optional(dtype(['float32', 'bfloat16'] as const)), metadata: optional(stringRecord) }

/** Writes named tensors to `path` (float32 or bfloat16). Resolves when the file is written. */
export async function saveSafetensors(path: string, tensors: Record<string, Tensor>, opts: SaveOptions = {}): Promise<void> {
  arg('path', path, string)
  if (typeof tensors !== 'object' || tensors === null || Array.isArray(tensors)) fail('ERR_ARGUMENT', `tensors: expected an object of tensors by name, got ${show(tensors)}`)
  const dtype = checkOptions('opts', opts, SAVE_OPTIONS).dtype ?? 'float32'
  // a missing folder fails here, before any tensor is read back
  const dir = await fs.stat(dirname(path)).catch(() => undefined)
  if (!dir?.isDirectory()) fail('ERR_ARGUMENT', `path: cannot write ${show(path)}: the folder ${show(dirname(path))} does not exist`)
  const names = Object.keys(tensors).sort()
  if (names.includes('__metadata__')) fail('ERR_ARGUMENT', 'tensors: "__metadata__" is reserved by the format')
  for (const n of names) {
    const t = tensors[n]
    if (!(t instanceof Tensor)) fail('ERR_ARGUMENT', `tensors.${n}: expected a Tensor, got ${show(t)}`)
    t._check(n)
    if (t.dtype === 'int32') fail('ERR_DTYPE', `tensors.${n}: int32 tensors are not checkpoint weights`)
  }
  // start every read before awaiting any, so the stream runs them back to back
  const reads = names.map((n) => {
    const t = tensors[n]
    if (dtype === 'float32') return t.data()
    const b = t.dtype === 'bfloat16' ? t : t.astype('bfloat16')
    const r = b.rawData()
    if (b !== t) b.dispose()
    return r
  })
  const datas = await Promise.all(reads)
  await writeEntries(path, names.map((n, i) => ({ name: n, shape: tensors[n].shape, dtype: dtype === 'float32' ? 'F32' : 'BF16', data: datas[i] })), opts.metadata)
}

/**
 * @internal Writes tensors whose reads the caller queued already (so they see exactly the ops
 * queued before it), in the given order, to `path`; float32 values only. Rejects with
 * ERR_ARGUMENT naming `path` when its folder does not exist.
 */
export async function _saveReads(path: string, entries: { name: string; shape: readonly number[]; data: Promise<Float32Array> }[], metadata?: Record<string, string>): Promise<void> {
  const all = Promise.all(entries.map((e) => e.data))
  all.catch(() => undefined) // a failed read still rejects below, when awaited; never unhandled
  const dir = await fs.stat(dirname(path)).catch(() => undefined)
  if (!dir?.isDirectory()) fail('ERR_ARGUMENT', `path: cannot write ${show(path)}: the folder ${show(dirname(path))} does not exist`)
  const datas = await all
  await writeEntries(path, entries.map((e, i) => ({ name: e.name, shape: e.shape, dtype: 'F32' as const, data: datas[i] })), metadata)
}

async function writeEntries(path: string, entries: { name: string; shape: readonly number[]; dtype: SafetensorsDType; data: Float32Array | Uint16Array }[], metadata?: Record<string, string>): Promise<void> {
  const header: Record<string, unknown> = {}
  if (metadata) header.__metadata__ = metadata
  let off = 0
  for (const e of entries) {
    const bytes = e.data.byteLength
    header[e.name] = { dtype: e.dtype, shape: [...e.shape], data_offsets: [off, off + bytes] }
    off += bytes
  }
  let json = JSON.stringify(header)
  const pad = (ALIGN - ((Buffer.byteLength(json) + 8) % ALIGN)) % ALIGN
  json += ' '.repeat(pad)
  const hb = Buffer.from(json, 'utf8')
  const out = Buffer.alloc(8 + hb.length + off)
  out.writeBigUInt64LE(BigInt(hb.length), 0)
  hb.copy(out, 8)
  let p = 8 + hb.length
  for (const { data: d } of entries) {
    // typed arrays hold host-endian values; x64 and arm64 are little-endian as the format wants
    Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out, p)
    p += d.byteLength
  }
  try {
    await fs.writeFile(path, out)
  } catch (e) {
    fail('ERR_ARGUMENT', `path: cannot write ${show(path)}: ${(e as Error).message}`)
  }
}

/** The largest header we read: the reference implementation's bound (100 MB). */
export const MAX_HEADER_BYTES = 100_000_000

// dtypes the format defines; we read F32 and BF16, the rest are refused by name
const SIZES: Record<string, number> = { F32: 4, BF16: 2 }
const KNOWN = new Set(['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'I16', 'U16', 'F16', 'I32', 'U32', 'I64', 'U64', 'F64', 'C64'])
const ENTRY_KEYS = ['dtype', 'shape', 'data_offsets']
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/** The checked header of one tensor. */
interface Entry {
  name: string
  dtype: SafetensorsDType
  shape: number[]
  begin: number
  end: number
}

/**
 * Parses a safetensors file held in memory, enforcing the format's rules: an 8-byte little-endian
 * header length within the file and at most MAX_HEADER_BYTES; exactly that many bytes of UTF-8
 * JSON starting with '{' and followed only by spaces; no duplicate keys; `__metadata__` (optional)
 * a map of strings; each entry exactly {dtype, shape, data_offsets} with sizes that agree; and the
 * bytes after the header indexed exactly once (sorted by offset: contiguous from 0, no holes, no
 * overlaps, ending at the end of the file). Violations throw a VffnError naming `source`, the
 * tensor and the rule: ERR_DTYPE for a dtype other than F32 and BF16, ERR_ARGUMENT otherwise.
 */
export function parseSafetensors(buf: Uint8Array, source = 'checkpoint'): { tensors: Map<string, StoredTensor>; metadata: Record<string, string> } {
  arg('buf', buf, instance(Uint8Array, 'a Uint8Array or Buffer'))
  arg('source', source, string)
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  if (b.length < 8) fail('ERR_ARGUMENT', `${source}: ${b.length} bytes is too short for a safetensors header`)
  const n = b.readBigUInt64LE(0)
  if (n > BigInt(MAX_HEADER_BYTES)) fail('ERR_ARGUMENT', `${source}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`)
  if (n > BigInt(b.length - 8)) fail('ERR_ARGUMENT', `${source}: header length ${n} exceeds the file (${b.length} bytes)`)
  const hlen = Number(n)
  let text: string
  try {
    text = utf8.decode(b.subarray(8, 8 + hlen))
  } catch {
    fail('ERR_ARGUMENT', `${source}: the ${hlen}-byte header is not valid UTF-8`)
  }
  if (text[0] !== '{') fail('ERR_ARGUMENT', `${source}: the header must start with '{', got ${show(text.slice(0, 8))} (is the header length right?)`)
  // only spaces may pad the JSON; JSON.parse would also take tabs and newlines
  const json = text.replace(/ +$/, '')
  if (!json.endsWith('}')) fail('ERR_ARGUMENT', `${source}: the header must be a JSON object followed only by spaces, it ends ${show(text.slice(-8))}`)
  let header: unknown
  try {
    header = JSON.parse(json)
  } catch (e) {
    fail('ERR_ARGUMENT', `${source}: the header is not valid JSON (${(e as Error).message})`)
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('ERR_ARGUMENT', `${source}: the header is not a JSON object`)
  scanHeaderTokens(json, source)
  const dataStart = 8 + hlen
  const dataLen = b.length - dataStart
  const metadata: Record<string, string> = {}
  const entries: Entry[] = []
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('ERR_ARGUMENT', `${source}: __metadata__ must be an object of strings, got ${show(entry)}`)
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') fail('ERR_ARGUMENT', `${source}: __metadata__.${k} must be a string, got ${show(v)}`)
        metadata[k] = v
      }
      continue
    }
    entries.push(checkEntry(source, name, entry, dataLen))
  }
  // every data byte belongs to exactly one tensor: no holes, no overlaps, nothing after the last
  const spans = [...entries].sort((x, y) => x.begin - y.begin || x.end - y.end)
  let at = 0, prev = ''
  for (const e of spans) {
    if (e.begin < at) fail('ERR_ARGUMENT', `${source}: tensors ${show(prev)} and ${show(e.name)} overlap (bytes ${e.begin}..${at} of the data)`)
    if (e.begin > at) fail('ERR_ARGUMENT', `${source}: bytes ${at}..${e.begin} of the data (before tensor ${show(e.name)}) are not indexed by any tensor`)
    at = e.end
    if (e.end > e.begin) prev = e.name
  }
  if (at !== dataLen) fail('ERR_ARGUMENT', `${source}: ${dataLen - at} trailing bytes after the last tensor are not indexed by any tensor (the data is ${dataLen} bytes)`)
  const tensors = new Map<string, StoredTensor>()
  for (const e of entries) tensors.set(e.name, decode(e, b.subarray(dataStart + e.begin, dataStart + e.end)))
  return { tensors, metadata }
}

function checkEntry(source: string, name: string, entry: unknown, dataLen: number): Entry {
  const where = `${source}: tensor ${show(name)}`
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail('ERR_ARGUMENT', `${where}: expected an object {dtype, shape, data_offsets}, got ${show(entry)}`)
  const e = entry as Record<string, unknown>
  const extra = Object.keys(e).filter((k) => !ENTRY_KEYS.includes(k))
  if (extra.length) fail('ERR_ARGUMENT', `${where}: unknown key${extra.length > 1 ? 's' : ''} ${extra.map(show).join(', ')} (an entry holds exactly dtype, shape, data_offsets)`)
  const absent = ENTRY_KEYS.filter((k) => !(k in e))
  if (absent.length) fail('ERR_ARGUMENT', `${where}: missing ${absent.join(', ')}`)
  const { dtype, shape, data_offsets: offs } = e
  if (typeof dtype !== 'string') fail('ERR_ARGUMENT', `${where}: dtype must be a string, got ${show(dtype)}`)
  if (!(dtype in SIZES)) fail('ERR_DTYPE', `${where} has ${KNOWN.has(dtype) ? 'dtype' : 'unknown dtype'} ${show(dtype)}; F32 and BF16 are supported`)
  if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0))
    fail('ERR_ARGUMENT', `${where} has an invalid shape ${show(shape)} (expected non-negative integers)`)
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0))
    fail('ERR_ARGUMENT', `${where} has invalid data_offsets ${show(offs)} (expected [begin, end], non-negative integers)`)
  const [begin, end] = offs as number[]
  if (begin > end) fail('ERR_ARGUMENT', `${where} has data_offsets [${begin}, ${end}]: begin is after end`)
  if (end > dataLen) fail('ERR_ARGUMENT', `${where} has data_offsets [${begin}, ${end}] outside the ${dataLen} data bytes`)
  const size = SIZES[dtype]
  const numel = (shape as number[]).reduce((x, y) => x * y, 1)
  if (numel * size !== end - begin)
    fail('ERR_ARGUMENT', `${where} of shape ${show(shape)} needs ${numel * size} bytes, its offsets span ${end - begin}`)
  return { name, dtype: dtype as SafetensorsDType, shape: [...(shape as number[])], begin, end }
}

function decode(e: Entry, bytes: Uint8Array): StoredTensor {
  const aligned = new Uint8Array(bytes) // a copy, aligned for typed-array views
  const numel = bytes.length / SIZES[e.dtype]
  if (e.dtype === 'F32') return { dtype: e.dtype, shape: e.shape, data: new Float32Array(aligned.buffer, 0, numel) }
  const raw = new Uint16Array(aligned.buffer, 0, numel)
  const bits = new Uint32Array(numel)
  for (let i = 0; i < numel; i++) bits[i] = raw[i] << 16
  return { dtype: e.dtype, shape: e.shape, data: new Float32Array(bits.buffer), raw }
}

/** Reads and parses a safetensors file (see parseSafetensors); errors name the file. */
export async function loadSafetensors(path: string): Promise<{ tensors: Map<string, StoredTensor>; metadata: Record<string, string> }> {
  // a number would be read as a file descriptor
  arg('path', path, string)
  let buf: Buffer
  try {
    buf = await fs.readFile(path)
  } catch (e) {
    fail('ERR_ARGUMENT', `path: cannot read ${show(path)}: ${(e as Error).message}`)
  }
  return parseSafetensors(buf, show(path))
}
