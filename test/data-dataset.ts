// Token datasets: both formats read back the exact tokens written, across file boundaries; headers
// that lie are errors naming the file; ids beyond the vocabulary name file and position; windows
// follow the documented seeded order, ranks are disjoint and covering; positions restore exactly.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { TokenDataset, VffnError } from '../lib/index'
import { openFds, randomIds, writeBin, writeNpy } from './helpers/token-files'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-data-'))
t.teardown(() => fs.rmSync(dir, { recursive: true }))
const file = (name: string) => path.join(dir, name)

t.test('llm.c .bin and .npy (1.0, 2.0, 3.0; uint16, uint32) read back exactly, as one stream', async (t) => {
  const a = randomIds(1000, 50257, 1), b = randomIds(777, 65536, 2), c = randomIds(500, 2 ** 31, 3), d = randomIds(300, 1000, 4)
  writeBin(file('a.bin'), a)
  writeNpy(file('b.npy'), b, { major: 1 })
  writeNpy(file('c.npy'), c, { descr: '<u4', major: 2 })
  writeNpy(file('d.npy'), d, { major: 3 })
  writeBin(file('empty.bin'), [])
  const ds = TokenDataset.open([file('a.bin'), file('b.npy'), file('empty.bin'), file('c.npy'), file('d.npy')])
  const all = [...a, ...b, ...c, ...d]
  t.equal(ds.tokens, all.length)
  t.same(ds.files.map((f) => [f.format, f.width, f.tokens]), [['llm.c', 2, 1000], ['npy', 2, 777], ['llm.c', 2, 0], ['npy', 4, 500], ['npy', 2, 300]])
  t.same(Array.from(ds.read(0, ds.tokens)), all, 'the whole stream')
  // windows that straddle each boundary, and one spanning a file entirely
  for (const [s, n] of [[990, 20], [1770, 10], [1700, 700], [2270, 10], [0, 1], [all.length - 1, 1], [5, 0]])
    t.same(Array.from(ds.read(s, n)), all.slice(s, s + n), `read(${s}, ${n})`)
  t.throws(() => ds.read(all.length - 1, 2), { code: 'ERR_ARGUMENT', message: /^count: / })
  ds.close()
})

t.test('headers that lie, truncated files and unsupported variants are errors naming the file', async (t) => {
  const ids = randomIds(100, 50000, 5)
  const cases: [string, () => void, string, RegExp][] = [
    ['count too large', () => writeBin(file('x.bin'), ids, { count: 101 }), 'ERR_ARGUMENT', /header says 101 tokens .*has 1224 bytes \(truncated\)/],
    ['count too small', () => writeBin(file('x.bin'), ids, { count: 99 }), 'ERR_ARGUMENT', /header says 99 tokens/],
    ['negative count', () => writeBin(file('x.bin'), ids, { count: -1 }), 'ERR_ARGUMENT', /negative/],
    ['bad magic', () => writeBin(file('x.bin'), ids, { magic: 20240521 }), 'ERR_ARGUMENT', /magic 20240521, expected 20240520/],
    ['version 2', () => writeBin(file('x.bin'), ids, { version: 2 }), 'ERR_UNSUPPORTED', /version 2; only version 1/],
    ['a short file', () => fs.writeFileSync(file('x.bin'), Buffer.alloc(100)), 'ERR_ARGUMENT', /100 bytes is too short/],
    ['npy float32', () => writeNpy(file('x.bin'), ids, { descr: '<f4' }), 'ERR_UNSUPPORTED', /dtype "<f4"/],
    ['npy big-endian', () => writeNpy(file('x.bin'), ids, { descr: '>u2' }), 'ERR_UNSUPPORTED', /dtype ">u2"; .*little-endian/],
    ['npy 2-D', () => writeNpy(file('x.bin'), ids, { shape: '(10, 10)' }), 'ERR_UNSUPPORTED', /shape \(10, 10\); token arrays must be 1-D/],
    ['npy version 4', () => writeNpy(file('x.bin'), ids, { major: 4 }), 'ERR_UNSUPPORTED', /format version 4\.0/],
    ['npy trailing bytes', () => writeNpy(file('x.bin'), ids, { extra: 2 }), 'ERR_ARGUMENT', /header says 100 tokens/],
    ['npy truncated data', () => { writeNpy(file('x.bin'), ids); fs.truncateSync(file('x.bin'), 200) }, 'ERR_ARGUMENT', /\(truncated\)/],
    ['npy truncated header', () => { writeNpy(file('x.bin'), ids); fs.truncateSync(file('x.bin'), 30) }, 'ERR_ARGUMENT', /claims \d+ bytes/],
    ['npy garbage header', () => { writeNpy(file('x.bin'), ids); const b = fs.readFileSync(file('x.bin')); b.write('xxxxxxxxxxxxxxxx', 12); fs.writeFileSync(file('x.bin'), b) }, 'ERR_ARGUMENT', /corrupt \.npy header/],
  ]
  const fds = openFds()
  for (const [what, make, code, msg] of cases) {
    make()
    t.throws(() => TokenDataset.open(file('x.bin')), { code, message: new RegExp(`^${file('x.bin').replace(/[.]/g, '\\.')}: .*${msg.source}`) }, what)
  }
  t.throws(() => TokenDataset.open(file('missing.bin')), { code: 'ERR_ARGUMENT', message: /^paths: cannot open .*missing\.bin/ })
  writeBin(file('good.bin'), ids)
  t.throws(() => TokenDataset.open([file('good.bin'), file('x.bin')]), VffnError, 'a bad second file')
  t.equal(openFds(), fds, 'failed opens leave no descriptor open')
})

t.test('ids beyond vocabSize fail as read, naming file and position; the loader does not move', async (t) => {
  const a = randomIds(300, 100, 6), b = randomIds(300, 100, 7)
  b[123] = 100
  writeBin(file('v1.bin'), a)
  writeNpy(file('v2.npy'), b)
  const ds = TokenDataset.open([file('v1.bin'), file('v2.npy')], { vocabSize: 100 })
  t.same(Array.from(ds.read(0, 423)), [...a, ...b.slice(0, 123)], 'reads before the bad id work')
  t.throws(() => ds.read(400, 50), { code: 'ERR_ARGUMENT', message: new RegExp(`v2\\.npy: token 123 \\(id 100\\) is >= vocabSize 100`) })
  await t.rejects(ds.scan(), { code: 'ERR_ARGUMENT', message: /v2\.npy: token 123 \(id 100\)/ })
  const ld = ds.loader({ batchSize: 4, seqLen: 10, order: 'sequential' })
  for (let i = 0; i < 10; i++) ld.nextArrays() // windows 0..39 end at token 400
  const before = ld.position()
  t.throws(() => ld.nextArrays(), { code: 'ERR_ARGUMENT', message: /v2\.npy: token 123/ })
  t.same(ld.position(), before, 'a failed batch leaves the position')
  const ok = TokenDataset.open(file('v1.bin'), { vocabSize: 100 })
  t.same(await ok.scan(), { tokens: 300, maxId: Math.max(...a) })
  ok.close()
  ds.close()
})

t.test('close() releases every descriptor; later use is ERR_DISPOSED', async (t) => {
  writeBin(file('c1.bin'), randomIds(50, 10, 8))
  writeNpy(file('c2.npy'), randomIds(50, 10, 9))
  const before = openFds()
  const ds = TokenDataset.open([file('c1.bin'), file('c2.npy'), file('c1.bin')])
  t.equal(openFds(), before + 3, 'one descriptor per file while open')
  const ld = ds.loader({ batchSize: 2, seqLen: 8 })
  ds.close()
  t.equal(openFds(), before, 'all closed')
  t.ok(ds.isClosed)
  ds.close()
  t.throws(() => ds.read(0, 1), { code: 'ERR_DISPOSED' })
  t.throws(() => ld.next(), { code: 'ERR_DISPOSED' })
  await t.rejects(ds.scan(), { code: 'ERR_DISPOSED' })
})

// the order TokenLoader documents, written out: mulberry32 seeded with seed + (e + 1) * 0x9e3779b9, Fisher–Yates
function documentedOrder(n: number, seed: number, epoch: number): number[] {
  let s = (seed + (epoch + 1) * 0x9e3779b9) % 2 ** 32
  const u32 = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return (x ^ (x >>> 14)) >>> 0
  }
  const p = Array.from({ length: n }, (_, i) => i)
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor((((u32() >>> 5) * 2 ** 26 + (u32() >>> 6)) / 2 ** 53) * (i + 1))
    ;[p[i], p[j]] = [p[j], p[i]]
  }
  return p
}

t.test('batches: tokens and shifted targets of the documented windows, by seed, rank and epoch', async (t) => {
  const all = randomIds(2001, 5000, 10)
  writeBin(file('s1.bin'), all.slice(0, 1200))
  writeNpy(file('s2.npy'), all.slice(1200), { descr: '<u4' })
  const ds = TokenDataset.open([file('s1.bin'), file('s2.npy')])
  const S = 16, W = Math.floor(2000 / S)
  const ld = ds.loader({ batchSize: 3, seqLen: S, seed: 42 })
  t.equal(ld.totalWindows, W)
  t.same(ld.starts(0), documentedOrder(W, 42, 0).map((w) => w * S), 'epoch 0 follows the documented shuffle')
  t.same(ld.starts(3), documentedOrder(W, 42, 3).map((w) => w * S), 'and epoch 3')
  t.not(ld.starts(0).join(), ld.starts(1).join(), 'each epoch its own order')
  t.same(ds.loader({ batchSize: 3, seqLen: S, seed: 42 }).starts(1), ld.starts(1), 'the same seed, the same order')
  t.not(ds.loader({ batchSize: 3, seqLen: S, seed: 43 }).starts(0).join(), ld.starts(0).join(), 'another seed, another order')
  const seq = ds.loader({ batchSize: 3, seqLen: S, order: 'sequential' })
  t.same(seq.starts(2), Array.from({ length: W }, (_, w) => w * S))

  // batch contents against the token array, through an epoch boundary (125 windows, batches of 3)
  const starts = [...ld.starts(0), ...ld.starts(1)]
  for (let i = 0; i < 43; i++) {
    const { tokens, targets } = ld.next()
    t.same(tokens.shape, [3, S])
    t.equal(tokens.dtype, 'int32')
    const [x, y] = [await tokens.intData(), await targets.intData()]
    const want = starts.slice(3 * i, 3 * i + 3)
    if (![...x].every((v, k) => v === all[want[Math.floor(k / S)] + (k % S)]) || ![...y].every((v, k) => v === all[want[Math.floor(k / S)] + (k % S) + 1])) {
      t.fail(`batch ${i} differs from windows ${want}`)
      break
    }
    tokens.dispose()
    targets.dispose()
  }
  t.same(ld.position(), { epoch: 1, index: 4, seed: 42, order: 'shuffle', seqLen: S, rank: 0, worldSize: 1 }, '129 windows: one epoch and 4')

  // ranks: disjoint, covering, counts within one
  for (const ws of [1, 3, 4, 7]) {
    const parts = Array.from({ length: ws }, (_, r) => ds.loader({ batchSize: 1, seqLen: S, seed: 9, rank: r, worldSize: ws }).starts(2))
    const union = parts.flat().sort((p, q) => p - q)
    t.same(union, Array.from({ length: W }, (_, w) => w * S), `worldSize ${ws}: disjoint and covering`)
    t.ok(Math.max(...parts.map((p) => p.length)) - Math.min(...parts.map((p) => p.length)) <= 1, `worldSize ${ws}: balanced`)
  }
  t.throws(() => ds.loader({ batchSize: 1, seqLen: S, rank: 3, worldSize: 3 }), { code: 'ERR_ARGUMENT', message: /opts\.rank/ })
  t.throws(() => ds.loader({ batchSize: 1, seqLen: 2001 }), { code: 'ERR_ARGUMENT', message: /opts\.seqLen: 2001 tokens give rank 0 of 1 no window/ })
  ds.close()
})

t.test('position() survives JSON and restore() continues exactly', async (t) => {
  writeBin(file('r.bin'), randomIds(1000, 3000, 11))
  const ds = TokenDataset.open(file('r.bin'))
  const opts = { batchSize: 4, seqLen: 12, seed: 5, rank: 1, worldSize: 2 }
  const a = ds.loader(opts)
  for (let i = 0; i < 9; i++) a.nextArrays() // 36 of this rank's 41 windows per epoch
  const saved = JSON.parse(JSON.stringify(a.position()))
  const restoredSeedless = ds.loader({ ...opts, seed: 77 })
  restoredSeedless.restore(saved)
  for (let i = 0; i < 12; i++) {
    const [x, y] = [a.nextArrays(), restoredSeedless.nextArrays()]
    t.same(Array.from(y.tokens), Array.from(x.tokens), `batch ${i} after restore`)
  }
  t.equal(a.position().epoch, 2, 'the run crossed epochs')
  t.throws(() => a.restore({ ...saved, seqLen: 13 }), { code: 'ERR_ARGUMENT', message: /pos\.seqLen: this loader has seqLen 12/ })
  t.throws(() => a.restore({ ...saved, rank: 0 }), { code: 'ERR_ARGUMENT', message: /pos\.rank/ })
  t.throws(() => a.restore({ ...saved, index: 10 ** 6 }), { code: 'ERR_ARGUMENT', message: /pos\.index/ })
  t.throws(() => a.restore({ epoch: 1 } as never), { code: 'ERR_ARGUMENT', message: /pos\.index: required/ })
  ds.close()
})
