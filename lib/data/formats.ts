// Token file formats: llm.c's .bin (a 256 x int32 header, then uint16 tokens) and NumPy .npy
// (1-D uint16 or uint32). Only headers are parsed here; tokens are read later by positioned reads.
import * as fs from 'fs'
import { fail, show } from '../errors'

/** llm.c's magic number (dev/data/data_common.py) and its GPT-2 version: uint16 tokens. */
export const LLMC_MAGIC = 20240520
export const LLMC_VERSION = 1
export const LLMC_HEADER_BYTES = 256 * 4

/** Where the tokens of one file lie: byte offset, count and width. */
export interface TokenFileInfo {
  path: string
  format: 'llm.c' | 'npy'
  /** bytes per token: 2 (uint16) or 4 (uint32) */
  width: 2 | 4
  /** byte offset of the first token */
  offset: number
  tokens: number
}

function readAt(fd: number, pos: number, len: number): Buffer {
  const b = Buffer.alloc(len)
  let got = 0
  while (got < len) {
    const n = fs.readSync(fd, b, got, len - got, pos + got)
    if (n === 0) break
    got += n
  }
  return b.subarray(0, got)
}

/** Opens `path` read-only and parses its header; returns the open descriptor with the layout. Throws VffnError. */
export function openTokenFile(path: string): { fd: number; info: TokenFileInfo } {
  let fd: number
  try {
    fd = fs.openSync(path, 'r')
  } catch (e) {
    return fail('ERR_ARGUMENT', `paths: cannot open ${show(path)}: ${(e as Error).message}`)
  }
  try {
    const size = fs.fstatSync(fd).size
    if (!fs.fstatSync(fd).isFile()) fail('ERR_ARGUMENT', `paths: ${show(path)} is not a file`)
    const head = readAt(fd, 0, Math.min(size, LLMC_HEADER_BYTES))
    const info = head.length >= 6 && head.subarray(0, 6).equals(NPY_MAGIC) ? parseNpy(path, fd, head, size) : parseLlmc(path, head, size)
    return { fd, info }
  } catch (e) {
    fs.closeSync(fd)
    throw e
  }
}

function parseLlmc(path: string, head: Buffer, size: number): TokenFileInfo {
  if (head.length < LLMC_HEADER_BYTES)
    fail('ERR_ARGUMENT', `${path}: ${size} bytes is too short for an llm.c token file (a ${LLMC_HEADER_BYTES}-byte header) or a .npy array`)
  const magic = head.readInt32LE(0), version = head.readInt32LE(4), count = head.readInt32LE(8)
  if (magic !== LLMC_MAGIC) fail('ERR_ARGUMENT', `${path}: not an llm.c token file (magic ${magic}, expected ${LLMC_MAGIC}) nor a .npy array`)
  if (version !== LLMC_VERSION) fail('ERR_UNSUPPORTED', `${path}: llm.c token file version ${version}; only version ${LLMC_VERSION} (uint16 tokens) is supported`)
  if (count < 0) fail('ERR_ARGUMENT', `${path}: the header's token count is negative (${count})`)
  const expect = LLMC_HEADER_BYTES + 2 * count
  if (size !== expect)
    fail('ERR_ARGUMENT', `${path}: the header says ${count} tokens (${expect} bytes), the file has ${size} bytes${size < expect ? ' (truncated)' : ''}`)
  return { path, format: 'llm.c', width: 2, offset: LLMC_HEADER_BYTES, tokens: count }
}

const NPY_MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]) // \x93NUMPY

// NumPy format 1.0 has a uint16 header length; 2.0 and 3.0 (a utf-8 header) a uint32 one
function parseNpy(path: string, fd: number, head: Buffer, size: number): TokenFileInfo {
  if (head.length < 10) fail('ERR_ARGUMENT', `${path}: a truncated .npy header (${size} bytes)`)
  const major = head[6], minor = head[7]
  if (![1, 2, 3].includes(major) || minor !== 0) fail('ERR_UNSUPPORTED', `${path}: .npy format version ${major}.${minor}; supported: 1.0, 2.0, 3.0`)
  const lenBytes = major === 1 ? 2 : 4
  if (head.length < 8 + lenBytes) fail('ERR_ARGUMENT', `${path}: a truncated .npy header (${size} bytes)`)
  const hlen = major === 1 ? head.readUInt16LE(8) : head.readUInt32LE(8)
  const start = 8 + lenBytes
  if (start + hlen > size) fail('ERR_ARGUMENT', `${path}: the .npy header claims ${hlen} bytes, the file has ${size} bytes in all`)
  if (hlen > 1 << 20) fail('ERR_ARGUMENT', `${path}: a .npy header of ${hlen} bytes is not a token array`)
  const text = readAt(fd, start, hlen).toString(major === 3 ? 'utf8' : 'latin1')
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(text)?.[1]
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text)?.[1]
  const shape = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text)?.[1]
  if (descr === undefined || fortran === undefined || shape === undefined || !text.trimEnd().endsWith('}'))
    fail('ERR_ARGUMENT', `${path}: a corrupt .npy header ${show(text.trim().slice(0, 120))}`)
  const width = ({ '<u2': 2, '<u4': 4 } as Record<string, number>)[descr]
  if (!width) fail('ERR_UNSUPPORTED', `${path}: .npy dtype ${show(descr)}; token arrays must be little-endian uint16 ('<u2') or uint32 ('<u4')`)
  const dims = shape.split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (dims.length !== 1 || !/^\d+$/.test(dims[0])) fail('ERR_UNSUPPORTED', `${path}: .npy shape (${shape}); token arrays must be 1-D`)
  const count = Number(dims[0])
  const offset = start + hlen
  if (offset + count * width !== size)
    fail('ERR_ARGUMENT', `${path}: the .npy header says ${count} tokens (${offset + count * width} bytes), the file has ${size} bytes${size < offset + count * width ? ' (truncated)' : ''}`)
  return { path, format: 'npy', width: width as 2 | 4, offset, tokens: count }
}

/** Reads `count` tokens from token `first` of an open file into out[at..] (scratch: a reusable byte buffer). */
export function readTokens(fd: number, info: TokenFileInfo, first: number, count: number, out: Uint32Array, at: number, scratch: Buffer): void {
  const bytes = count * info.width
  const buf = scratch.length >= bytes ? scratch.subarray(0, bytes) : Buffer.alloc(bytes)
  let got = 0
  while (got < bytes) {
    const n = fs.readSync(fd, buf, got, bytes - got, info.offset + first * info.width + got)
    if (n === 0) fail('ERR_ARGUMENT', `${info.path}: the file ended at token ${first + got / info.width} (was it truncated after opening?)`)
    got += n
  }
  if (info.width === 2) for (let i = 0; i < count; i++) out[at + i] = buf.readUInt16LE(2 * i)
  else for (let i = 0; i < count; i++) out[at + i] = buf.readUInt32LE(4 * i)
}

/** Streams uint16 tokens into an llm.c .bin file; the header's count is written on close. */
export class LlmcWriter {
  private readonly fd: number
  private count = 0
  private pos = LLMC_HEADER_BYTES

  constructor(readonly path: string) {
    this.fd = fs.openSync(path, 'w')
    fs.writeSync(this.fd, Buffer.alloc(LLMC_HEADER_BYTES), 0, LLMC_HEADER_BYTES, 0)
  }

  get tokens(): number {
    return this.count
  }

  write(ids: ArrayLike<number>): void {
    const b = Buffer.alloc(ids.length * 2)
    for (let i = 0; i < ids.length; i++) {
      if (!(ids[i] >= 0 && ids[i] < 65536)) fail('ERR_ARGUMENT', `ids[${i}]: ${ids[i]} does not fit llm.c's uint16 tokens`)
      b.writeUInt16LE(ids[i], 2 * i)
    }
    fs.writeSync(this.fd, b, 0, b.length, this.pos)
    this.pos += b.length
    this.count += ids.length
    if (this.count > 2 ** 31 - 1) fail('ERR_ARGUMENT', `${this.path}: more than 2^31 - 1 tokens do not fit the header's int32 count`)
  }

  close(): void {
    const h = Buffer.alloc(12)
    h.writeInt32LE(LLMC_MAGIC, 0)
    h.writeInt32LE(LLMC_VERSION, 4)
    h.writeInt32LE(this.count, 8)
    fs.writeSync(this.fd, h, 0, 12, 0)
    fs.closeSync(this.fd)
  }
}
