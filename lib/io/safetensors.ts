// safetensors checkpoints (the format PyTorch tooling reads): an 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?:
// {string: string}}, then the raw little-endian tensor bytes, offsets relative to the end of the
// header. We read and write F32 and BF16 (BF16 loads exactly into float32).
import { promises as fs } from 'fs'
import { fail, show } from '../errors'
import { dirname } from 'path'
import { Tensor } from '../tensor'
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
  const header: Record<string, unknown> = {}
  if (opts.metadata) header.__metadata__ = opts.metadata
  let off = 0
  names.forEach((n, i) => {
    const bytes = datas[i].byteLength
    header[n] = { dtype: dtype === 'float32' ? 'F32' : 'BF16', shape: [...tensors[n].shape], data_offsets: [off, off + bytes] }
    off += bytes
  })
  let json = JSON.stringify(header)
  const pad = (ALIGN - ((Buffer.byteLength(json) + 8) % ALIGN)) % ALIGN
  json += ' '.repeat(pad)
  const hb = Buffer.from(json, 'utf8')
  const out = Buffer.alloc(8 + hb.length + off)
  out.writeBigUInt64LE(BigInt(hb.length), 0)
  hb.copy(out, 8)
  let p = 8 + hb.length
  for (const d of datas) {
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

/** Parses a safetensors file held in memory. Throws ERR_ARGUMENT for a malformed file, ERR_DTYPE for other dtypes. */
export function parseSafetensors(buf: Uint8Array, source = 'checkpoint'): { tensors: Map<string, StoredTensor>; metadata: Record<string, string> } {
  arg('buf', buf, instance(Uint8Array, 'a Uint8Array or Buffer'))
  arg('source', source, string)
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  if (b.length < 8) fail('ERR_ARGUMENT', `${source}: ${b.length} bytes is too short for a safetensors header`)
  const n = b.readBigUInt64LE(0)
  if (n > BigInt(b.length - 8)) fail('ERR_ARGUMENT', `${source}: header length ${n} exceeds the file (${b.length} bytes)`)
  const hlen = Number(n)
  let header: Record<string, unknown>
  try {
    header = JSON.parse(b.subarray(8, 8 + hlen).toString('utf8'))
  } catch (e) {
    fail('ERR_ARGUMENT', `${source}: the header is not valid JSON (${(e as Error).message})`)
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('ERR_ARGUMENT', `${source}: the header is not a JSON object`)
  const dataStart = 8 + hlen
  const dataLen = b.length - dataStart
  const metadata: Record<string, string> = {}
  const tensors = new Map<string, StoredTensor>()
  const spans: [number, number, string][] = []
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null) fail('ERR_ARGUMENT', `${source}: __metadata__ must be an object of strings`)
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) metadata[k] = String(v)
      continue
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
    if (typeof e !== 'object' || e === null) fail('ERR_ARGUMENT', `${source}: entry ${show(name)} is not an object`)
    if (e.dtype !== 'F32' && e.dtype !== 'BF16') fail('ERR_DTYPE', `${source}: tensor ${show(name)} has dtype ${show(e.dtype)}; F32 and BF16 are supported`)
    if (!Array.isArray(e.shape) || !e.shape.every((s) => Number.isInteger(s) && s >= 0))
      fail('ERR_ARGUMENT', `${source}: tensor ${show(name)} has an invalid shape ${show(e.shape)}`)
    const offs = e.data_offsets
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0) || offs[0] > offs[1] || offs[1] > dataLen)
      fail('ERR_ARGUMENT', `${source}: tensor ${show(name)} has data_offsets ${show(offs)} outside the ${dataLen} data bytes`)
    const size = e.dtype === 'F32' ? 4 : 2
    const numel = (e.shape as number[]).reduce((x, y) => x * y, 1)
    if (offs[1] - offs[0] !== numel * size)
      fail('ERR_ARGUMENT', `${source}: tensor ${show(name)} of shape ${show(e.shape)} needs ${numel * size} bytes, its offsets span ${offs[1] - offs[0]}`)
    spans.push([offs[0], offs[1], name])
    const bytes = b.subarray(dataStart + offs[0], dataStart + offs[1])
    const aligned = new Uint8Array(bytes) // a copy, aligned for typed-array views
    let data: Float32Array
    let raw: Uint16Array | undefined
    if (e.dtype === 'F32') data = new Float32Array(aligned.buffer, 0, numel)
    else {
      raw = new Uint16Array(aligned.buffer, 0, numel)
      const bits = new Uint32Array(numel)
      for (let i = 0; i < numel; i++) bits[i] = raw[i] << 16
      data = new Float32Array(bits.buffer)
    }
    tensors.set(name, { dtype: e.dtype, shape: [...(e.shape as number[])], data, raw })
  }
  spans.sort((x, y) => x[0] - y[0])
  for (let i = 1; i < spans.length; i++)
    if (spans[i][0] < spans[i - 1][1]) fail('ERR_ARGUMENT', `${source}: tensors ${show(spans[i - 1][2])} and ${show(spans[i][2])} overlap`)
  return { tensors, metadata }
}

/** Reads a safetensors file. */
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
