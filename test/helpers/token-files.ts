// Token files written plainly from the formats' own descriptions (llm.c's header; NumPy's .npy
// spec), independent of lib/data, with knobs to make headers that lie.
import * as fs from 'fs'

/** llm.c .bin: 256 int32 (magic, version, count, zeros), then uint16 tokens. */
export function writeBin(path: string, ids: ArrayLike<number>, o: { magic?: number; version?: number; count?: number } = {}): void {
  const h = new Int32Array(256)
  h[0] = o.magic ?? 20240520
  h[1] = o.version ?? 1
  h[2] = o.count ?? ids.length
  fs.writeFileSync(path, Buffer.concat([Buffer.from(h.buffer), Buffer.from(Uint16Array.from(ids).buffer)]))
}

/** .npy: magic, version, header length (uint16 for 1.0, uint32 after), a dict padded to 64 bytes, then data. */
export function writeNpy(path: string, ids: ArrayLike<number>, o: { descr?: string; major?: number; shape?: string; extra?: number } = {}): void {
  const descr = o.descr ?? '<u2'
  const major = o.major ?? 1
  const lenBytes = major === 1 ? 2 : 4
  let dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${o.shape ?? `(${ids.length},)`}, }`
  const pad = 64 - ((8 + lenBytes + dict.length + 1) % 64)
  dict = dict + ' '.repeat(pad % 64) + '\n'
  const pre = Buffer.alloc(8 + lenBytes)
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, 0]).copy(pre)
  if (major === 1) pre.writeUInt16LE(dict.length, 8)
  else pre.writeUInt32LE(dict.length, 8)
  const data = /u4/.test(descr) ? Buffer.from(Uint32Array.from(ids).buffer) : Buffer.from(Uint16Array.from(ids).buffer)
  fs.writeFileSync(path, Buffer.concat([pre, Buffer.from(dict, 'latin1'), data, Buffer.alloc(o.extra ?? 0)]))
}

/** Deterministic ids in [0, vocab) (mulberry32). */
export function randomIds(n: number, vocab: number, seed: number): number[] {
  let a = seed >>> 0
  return Array.from({ length: n }, () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) % vocab
  })
}

/** Open file descriptors of this process (Linux). */
export const openFds = (): number => fs.readdirSync('/proc/self/fd').length
