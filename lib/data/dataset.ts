// Token datasets: one or many token files read as one stream by positioned reads (Node has no
// mmap), so only a window's worth of bytes is ever in memory; loaders cut it into [B, S] batches.
import * as fs from 'fs'
import { mulberry32Bits } from '../random'
import { Device } from '../device'
import { fail, show } from '../errors'
import { Tensor, tensor } from '../tensor'
import { arg, arrayOf, check, checkOptions, custom, device, int, object, oneOf, optional, string } from '../validate'
import { TokenFileInfo, openTokenFile, readTokens } from './formats'

/** Options of {@link TokenDataset.open}. */
export interface DatasetOptions {
  /** ids must be < vocabSize; checked on every read (and by `scan()`). Default: any id that fits int32. */
  vocabSize?: number
}

/** One file of a dataset: its path, format ('llm.c' or 'npy'), bytes per token and token count. */
export interface DatasetFile {
  path: string
  format: 'llm.c' | 'npy'
  width: 2 | 4
  tokens: number
}

/** Options of {@link TokenDataset.loader}. */
export interface LoaderOptions {
  batchSize: number
  seqLen: number
  /** 'shuffle' (default): each epoch visits the windows in a seeded random order; 'sequential': in file order */
  order?: 'shuffle' | 'sequential'
  /** seed of the shuffle, an integer in [0, 2^32); default 0 */
  seed?: number
  /** this process's rank in [0, worldSize); default 0 */
  rank?: number
  /** how many ranks share the data; default 1 */
  worldSize?: number
  /** where the batches' tensors live; default 'cpu' */
  device?: string | Device
}

/** Where a loader is: JSON-able, for a checkpoint's `extra`; `restore` continues from it exactly. */
export interface DataPosition {
  /** epochs completed */
  epoch: number
  /** windows of this rank already delivered in the current epoch */
  index: number
  seed: number
  order: 'shuffle' | 'sequential'
  seqLen: number
  rank: number
  worldSize: number
}

/** A batch: tokens and targets int32 [B, S], targets[b, s] = the token after tokens[b, s]. */
export interface Batch {
  tokens: Tensor
  targets: Tensor
}

const DATASET_OPTIONS = { vocabSize: optional(int(1, 2 ** 31)) }
const paths = custom<string[]>('a file path or a non-empty array of them', (name, v) =>
  typeof v === 'string' ? [string(name, v)] : arrayOf(string, 1)(name, v))

/**
 * Token files read as one stream: llm.c `.bin` (256 x int32 header: magic 20240520, version 1,
 * token count; then uint16 tokens) and NumPy `.npy` (1-D '<u2' or '<u4'; format 1.0, 2.0, 3.0).
 * Headers are checked on open (a count that disagrees with the file size is an error); ids are
 * checked against `vocabSize` as they are read, naming the file and token position; `scan()` checks
 * every id up front. Holds one descriptor per file until `close()`.
 */
export class TokenDataset {
  /** the files, in stream order */
  readonly files: readonly DatasetFile[]
  /** tokens in all files together */
  readonly tokens: number
  readonly vocabSize: number | undefined
  private readonly fds: number[]
  private readonly infos: TokenFileInfo[]
  /** first stream position of each file, and the end */
  private readonly starts: number[]
  private scratch = Buffer.alloc(0)
  private closed = false

  private constructor(fds: number[], infos: TokenFileInfo[], vocabSize: number | undefined) {
    this.fds = fds
    this.infos = infos
    this.vocabSize = vocabSize
    this.files = infos.map(({ path, format, width, tokens }) => ({ path, format, width, tokens }))
    this.starts = [0]
    for (const f of infos) this.starts.push(this.starts[this.starts.length - 1] + f.tokens)
    this.tokens = this.starts[this.starts.length - 1]
  }

  /** Opens one file or several as one stream. Throws VffnError (ERR_ARGUMENT, ERR_UNSUPPORTED) naming the file. */
  static open(files: string | readonly string[], opts: DatasetOptions = {}): TokenDataset {
    const list = arg('paths', files, paths)
    const o = checkOptions('opts', opts, DATASET_OPTIONS)
    const fds: number[] = [], infos: TokenFileInfo[] = []
    try {
      for (const p of list) {
        const { fd, info } = openTokenFile(p)
        fds.push(fd)
        infos.push(info)
      }
    } catch (e) {
      for (const fd of fds) fs.closeSync(fd)
      throw e
    }
    return new TokenDataset(fds, infos, o.vocabSize)
  }

  /** Whether close() has run. */
  get isClosed(): boolean {
    return this.closed
  }

  private live(): void {
    if (this.closed) fail('ERR_DISPOSED', 'dataset: used after close()')
  }

  /** Tokens [start, start + count) of the stream as int32, each id checked against vocabSize. */
  read(start: number, count: number): Int32Array {
    this.live()
    arg('start', start, int(0, this.tokens))
    arg('count', count, int(0, this.tokens - start))
    const out = new Uint32Array(count)
    this.readInto(start, count, out)
    return new Int32Array(out.buffer)
  }

  /** @internal reads and checks ids into out (a uint32 view, so no id wraps before it is checked) */
  readInto(start: number, count: number, out: Uint32Array, at = 0): void {
    // a closed descriptor's number may already belong to another file
    this.live()
    const limit = this.vocabSize ?? 2 ** 31
    let f = this.fileAt(start), pos = start, done = 0
    while (done < count) {
      const info = this.infos[f]
      const first = pos - this.starts[f]
      const n = Math.min(count - done, info.tokens - first)
      if (this.scratch.length < n * info.width) this.scratch = Buffer.alloc(n * info.width)
      readTokens(this.fds[f], info, first, n, out, at + done, this.scratch)
      for (let i = 0; i < n; i++)
        if (out[at + done + i] >= limit) badId(info, first + i, out[at + done + i], this.vocabSize)
      done += n
      pos += n
      f++
    }
  }

  private fileAt(pos: number): number {
    let lo = 0, hi = this.infos.length - 1
    // the last file whose first position is <= pos and that holds pos (empty files are skipped)
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.starts[mid] <= pos) lo = mid
      else hi = mid - 1
    }
    while (lo < this.infos.length - 1 && this.starts[lo + 1] <= pos) lo++
    return lo
  }

  /**
   * Checks every id against vocabSize, streaming 1 Mi tokens at a time and yielding to the event
   * loop between chunks; resolves with the largest id, rejects naming the first bad one's file and position.
   */
  async scan(): Promise<{ tokens: number; maxId: number }> {
    this.live()
    const chunk = 1 << 20
    const buf = new Uint32Array(Math.min(chunk, Math.max(this.tokens, 1)))
    let maxId = -1
    for (let s = 0; s < this.tokens; s += chunk) {
      this.live()
      const n = Math.min(chunk, this.tokens - s)
      this.readInto(s, n, buf)
      for (let i = 0; i < n; i++) if (buf[i] > maxId) maxId = buf[i]
      await new Promise<void>((r) => setImmediate(r))
    }
    return { tokens: this.tokens, maxId }
  }

  /** A batch loader over this dataset (windows of seqLen + 1 tokens; see {@link TokenLoader}). */
  loader(opts: LoaderOptions): TokenLoader {
    this.live()
    return new TokenLoader(this, opts)
  }

  /** Closes every file descriptor; later reads fail with ERR_DISPOSED. Idempotent. */
  close(): void {
    if (this.closed) return
    this.closed = true
    for (const fd of this.fds) fs.closeSync(fd)
  }
}

function badId(info: TokenFileInfo, at: number, id: number, vocabSize: number | undefined): never {
  const what = vocabSize === undefined ? 'does not fit int32' : `is >= vocabSize ${vocabSize}`
  return fail('ERR_ARGUMENT', `${info.path}: token ${at} (id ${id}) ${what}`)
}

const LOADER_OPTIONS = {
  batchSize: int(1, 1 << 20), seqLen: int(1, 1 << 24), order: optional(oneOf(['shuffle', 'sequential'] as const)),
  seed: optional(int(0, 2 ** 32 - 1)), rank: optional(int(0, 1 << 20)), worldSize: optional(int(1, 1 << 20)), device: optional(device),
}
const POSITION = object({
  epoch: int(0), index: int(0), seed: int(0, 2 ** 32 - 1), order: oneOf(['shuffle', 'sequential'] as const),
  seqLen: int(1), rank: int(0), worldSize: int(1),
}, ['epoch', 'index', 'seed', 'order', 'seqLen', 'rank', 'worldSize'])

/**
 * Batches of windows of S + 1 tokens. Window w covers stream tokens [w*S, w*S + S]; there are
 * W = floor((tokens - 1) / S) of them (consecutive windows share one token, so every token but
 * the tail is a target once per epoch). Epoch e visits them in order p_e: the identity
 * ('sequential') or a Fisher–Yates shuffle of 0..W-1 driven by mulberry32 seeded with
 * (seed + (e + 1) * 0x9e3779b9) mod 2^32 ('shuffle'). Rank r takes p_e[r], p_e[r + worldSize], ...,
 * so the ranks' windows are disjoint and together cover the epoch (their counts differ by at most
 * one). A batch that runs past the end of an epoch continues into the next one.
 */
export class TokenLoader {
  readonly batchSize: number
  readonly seqLen: number
  readonly order: 'shuffle' | 'sequential'
  readonly rank: number
  readonly worldSize: number
  /** windows in the whole stream per epoch */
  readonly totalWindows: number
  /** this rank's windows per epoch */
  readonly windows: number
  private seed: number
  private epoch = 0
  private index = 0
  private perm: { epoch: number; seed: number; p: Uint32Array } | undefined
  private readonly device: Device

  /** @internal use dataset.loader(opts) */
  constructor(private readonly dataset: TokenDataset, opts: LoaderOptions) {
    arg('dataset', dataset, check<TokenDataset>('a TokenDataset', (v) => v instanceof TokenDataset))
    const o = checkOptions('opts', opts, LOADER_OPTIONS, ['batchSize', 'seqLen'])
    this.batchSize = o.batchSize!
    this.seqLen = o.seqLen!
    this.order = o.order ?? 'shuffle'
    this.seed = o.seed ?? 0
    this.worldSize = o.worldSize ?? 1
    this.rank = o.rank ?? 0
    if (this.rank >= this.worldSize) fail('ERR_ARGUMENT', `opts.rank: expected an integer in [0, ${this.worldSize - 1}] (below worldSize), got ${this.rank}`)
    this.device = o.device ?? Device.get('cpu')
    this.totalWindows = Math.max(0, Math.floor((dataset.tokens - 1) / this.seqLen))
    this.windows = Math.max(0, Math.ceil((this.totalWindows - this.rank) / this.worldSize))
    if (this.windows === 0)
      fail('ERR_ARGUMENT', `opts.seqLen: ${dataset.tokens} tokens give rank ${this.rank} of ${this.worldSize} no window of seqLen + 1 = ${this.seqLen + 1} tokens`)
  }

  /** The stream offsets of this rank's windows in epoch `epoch`, in visiting order. */
  starts(epoch: number): number[] {
    arg('epoch', epoch, int(0))
    return Array.from({ length: this.windows }, (_, i) => this.windowAt(epoch, i) * this.seqLen)
  }

  private windowAt(epoch: number, i: number): number {
    const k = this.rank + i * this.worldSize
    if (this.order === 'sequential') return k
    if (!this.perm || this.perm.epoch !== epoch || this.perm.seed !== this.seed) this.perm = { epoch, seed: this.seed, p: shuffle(this.totalWindows, this.seed, epoch) }
    return this.perm.p[k]
  }

  /** The next batch as int32 tensors [B, S] on the loader's device; throws (changing nothing) on a bad id. */
  next(): Batch {
    const { tokens, targets } = this.nextArrays()
    const shape = [this.batchSize, this.seqLen]
    return { tokens: tensor(tokens, shape, { device: this.device }), targets: tensor(targets, shape, { device: this.device }) }
  }

  /** The next batch as row-major int32 arrays of B * S entries (what next() uploads). */
  nextArrays(): { tokens: Int32Array; targets: Int32Array } {
    const B = this.batchSize, S = this.seqLen
    const win = new Uint32Array(S + 1)
    const tokens = new Int32Array(B * S), targets = new Int32Array(B * S)
    let epoch = this.epoch, index = this.index
    for (let b = 0; b < B; b++) {
      this.dataset.readInto(this.windowAt(epoch, index) * S, S + 1, win)
      for (let s = 0; s < S; s++) {
        tokens[b * S + s] = win[s]
        targets[b * S + s] = win[s + 1]
      }
      if (++index === this.windows) [epoch, index] = [epoch + 1, 0]
    }
    // only a batch read in full moves the position
    this.epoch = epoch
    this.index = index
    return { tokens, targets }
  }

  /** Where the loader is, as a plain object (JSON-able). */
  position(): DataPosition {
    return { epoch: this.epoch, index: this.index, seed: this.seed, order: this.order, seqLen: this.seqLen, rank: this.rank, worldSize: this.worldSize }
  }

  /** Continues from a position that position() returned (here or in an earlier process with the same data and options). */
  restore(pos: DataPosition): void {
    const p = POSITION('pos', pos)
    for (const k of ['order', 'seqLen', 'rank', 'worldSize'] as const)
      if (p[k] !== this[k]) fail('ERR_ARGUMENT', `pos.${k}: this loader has ${k} ${show(this[k])}, the position ${show(p[k])}`)
    if (p.index! >= this.windows) fail('ERR_ARGUMENT', `pos.index: expected an integer in [0, ${this.windows - 1}] (this rank's windows per epoch), got ${p.index}`)
    this.epoch = p.epoch!
    this.index = p.index!
    this.seed = p.seed!
  }
}

/** Fisher–Yates over 0..n-1 with mulberry32 (two draws make a 53-bit uniform, so j is unbiased in practice). */
function shuffle(n: number, seed: number, epoch: number): Uint32Array {
  const next = mulberry32Bits(seed + Math.imul(epoch + 1, 0x9e3779b9))
  const p = new Uint32Array(n)
  for (let i = 0; i < n; i++) p[i] = i
  for (let i = n - 1; i > 0; i--) {
    const u = ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992
    const j = Math.floor(u * (i + 1))
    const t = p[i]
    p[i] = p[j]
    p[j] = t
  }
  return p
}
