// CPU GEMM through the public matmul: a float64 reference over many shapes, layouts and dtypes,
// alpha/beta, NaN-poisoned outputs, bit-identical results at every thread count, the portable kernel.
import t, { Test } from 'tap'
import { runSelf } from './helpers/child'
import { tensor, matmul, randn, setNumThreads, getNumThreads, Tensor, _native } from '../lib/index'

const PORTABLE_CHILD = process.env.VFFN_GEMM_TEST_CHILD === '1'

// deterministic values in [-1, 1) (mulberry32), so a failure replays exactly
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    out[i] = (((x ^ (x >>> 14)) >>> 0) / 4294967296) * 2 - 1
  }
  return out
}

// float32 -> bfloat16 (round to nearest even) -> float32, written plainly
function bf16Round(x: number): number {
  const f = new Float32Array([x])
  const u = new Uint32Array(f.buffer)
  const lower = u[0] & 0xffff
  let upper = u[0] >>> 16
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper = (upper + 1) >>> 0
  u[0] = (upper << 16) >>> 0
  return f[0]
}

type Layout = 'plain' | 'strided' | 'T'
type DT = 'float32' | 'bfloat16'

// a logical [r, c] tensor in one of three layouts, with its stored (dtype-rounded) values
function operand(r: number, c: number, layout: Layout, dtype: DT, seed: number): { t: Tensor; at: (i: number, j: number) => number } {
  const round = dtype === 'bfloat16' ? bf16Round : (x: number) => x
  if (layout === 'plain') {
    const v = values(r * c, seed).map(round)
    return { t: tensor(v, [r, c], { dtype }), at: (i, j) => v[i * c + j] }
  }
  if (layout === 'T') {  // stored [c, r]; the view's columns are contiguous
    const v = values(r * c, seed).map(round)
    return { t: tensor(v, [c, r], { dtype }).T, at: (i, j) => v[j * r + i] }
  }
  // rows 1..r+1 and columns 2..c+2 of a [r + 3, c + 5] tensor: leading dimension c + 5
  const ld = c + 5
  const v = values((r + 3) * ld, seed).map(round)
  return { t: tensor(v, [r + 3, ld], { dtype }).rows(1, r + 1).cols(2, c + 2), at: (i, j) => v[(i + 1) * ld + j + 2] }
}

interface Case {
  M: number
  N: number
  K: number
  ta?: boolean
  tb?: boolean
  la?: Layout
  lb?: Layout
  da?: DT
  db?: DT
  alpha?: number
  beta?: number
  out?: 'none' | 'nan' | 'values'
}

const U = 2 ** -24  // float32 unit roundoff

async function runCase(c: Case, seed: number): Promise<string | null> {
  const { M, N, K } = c
  const ta = c.ta ?? false, tb = c.tb ?? false
  const A = ta ? operand(K, M, c.la ?? 'plain', c.da ?? 'float32', seed) : operand(M, K, c.la ?? 'plain', c.da ?? 'float32', seed)
  const B = tb ? operand(N, K, c.lb ?? 'plain', c.db ?? 'float32', seed + 1) : operand(K, N, c.lb ?? 'plain', c.db ?? 'float32', seed + 1)
  const a = (i: number, k: number) => (ta ? A.at(k, i) : A.at(i, k))
  const b = (k: number, j: number) => (tb ? B.at(j, k) : B.at(k, j))
  const alpha = c.alpha ?? 1, beta = c.beta ?? 0
  const mode = c.out ?? (beta !== 0 ? 'values' : 'none')
  const c0 = mode === 'values' ? values(M * N, seed + 2) : new Float32Array(M * N).fill(NaN)
  const out = mode === 'none' ? undefined : tensor(c0, [M, N])
  const got = await matmul(A.t, B.t, { transposeA: ta, transposeB: tb, alpha, beta, out }).data()
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0, mag = 0
      for (let k = 0; k < K; k++) {
        const p = a(i, k) * b(k, j)
        s += p
        mag += Math.abs(p)
      }
      const prior = beta === 0 ? 0 : beta * c0[i * N + j]
      const want = alpha * s + prior
      // float32 sums in k-chains of at most 512 terms, then across at most K/64 chains, then the
      // alpha/beta epilogue: each step's rounding error is bounded by its length times U
      const tol = (Math.min(K, 512) + Math.ceil(K / 64) + 4) * U * (Math.abs(alpha) * mag + Math.abs(prior)) + 1e-30
      const g = got[i * N + j]
      if (!(Math.abs(g - want) <= tol))
        return `C[${i},${j}] = ${g}, want ${want} (tol ${tol.toExponential(2)}) in ${JSON.stringify(c)}`
    }
  return null
}

async function runAll(t: Test, name: string, cases: Case[]): Promise<void> {
  const bad: string[] = []
  let seed = 1
  for (const c of cases) {
    const e = await runCase(c, (seed += 7))
    if (e) bad.push(e)
  }
  t.same(bad.slice(0, 5), [], `${name}: ${cases.length} cases match the float64 reference`)
}

const SIZES = [1, 2, 3, 5, 7, 13, 17, 31, 37, 61, 67, 127, 131]

// every (M, N) pair of small sizes and primes, K cycling through them, all four transposes
function shapeCases(): Case[] {
  const cases: Case[] = []
  let n = 0
  for (const M of SIZES)
    for (const N of SIZES) {
      const K = SIZES[(n * 5) % SIZES.length]
      cases.push({ M, N, K, ta: (n & 1) === 1, tb: (n & 2) === 2 })
      n++
    }
  return cases
}

// ragged edges of the micro-tile (6x16, 4x16), the cache blocks (MC 144, KC 256), more than one K block
const RAGGED: Case[] = [
  { M: 6, N: 16, K: 256 }, { M: 12, N: 32, K: 257 }, { M: 145, N: 17, K: 255 }, { M: 150, N: 33, K: 513 },
  { M: 289, N: 47, K: 600 }, { M: 7, N: 15, K: 1 }, { M: 5, N: 4101, K: 3 }, { M: 97, N: 130, K: 1031 },
  // big enough to run on the pool with A packed once and shared by the column tasks
  { M: 301, N: 290, K: 530, da: 'bfloat16', la: 'strided' }, { M: 64, N: 700, K: 900, tb: true },
]

if (!PORTABLE_CHILD) {
  t.test('kernel in use', async (t) => {
    t.match(_native.kernelInfo().gemm, /^(avx2-fma|portable)$/)
  })
}

t.test('primes, ragged tails and all four transposes', async (t) => {
  await runAll(t, 'shapes', shapeCases())
  await runAll(t, 'ragged', [...RAGGED, ...RAGGED.map((c) => ({ ...c, ta: true, tb: true }))])
})

// a row's bits depend only on its own A row, never on how many rows come with it: every M from
// 9 (past the small-M path) to 40 (each residue of the 6-row micro-tile, so bottom edges of 1..5
// rows), with N ending in a partial 16-column tile and beta != 0, against the same rows at M = 48
t.test('packed path: a row gives the same bits whatever M (bottom edges of 1..5 rows)', async (t) => {
  const K = 70, N = 53
  const a = randn([48, K], { seed: 91 }), b = randn([N, K], { seed: 92 })
  const c0 = await randn([48, N], { seed: 93 }).data()
  const out = (M: number) => tensor(c0.slice(0, M * N), [M, N])  // a fresh copy: the product overwrites it
  const full = await matmul(a, b, { transposeB: true, out: out(48), alpha: 0.75, beta: 0.5 }).data()
  const bad: number[] = []
  for (let M = 9; M <= 40; M++) {
    const got = await matmul(a.rows(0, M), b, { transposeB: true, out: out(M), alpha: 0.75, beta: 0.5 }).data()
    for (let i = 0; i < M * N; i++)
      if (!Object.is(got[i], full[i])) {
        bad.push(M)
        break
      }
  }
  t.same(bad, [], 'every M from 9 to 40 matches M = 48 bit for bit')
})

t.test('strided views, .T views and bfloat16 operands', async (t) => {
  const cases: Case[] = []
  const layouts: Layout[] = ['plain', 'strided', 'T']
  let n = 0
  for (const la of layouts)
    for (const lb of layouts)
      for (const [da, db] of [['float32', 'float32'], ['bfloat16', 'float32'], ['float32', 'bfloat16'], ['bfloat16', 'bfloat16']] as [DT, DT][]) {
        const s = [13, 37, 67, 131, 5, 150, 270][n % 7]
        cases.push({ M: s, N: SIZES[(n * 3) % 13] + 16, K: SIZES[(n * 7) % 13] + 9, la, lb, da, db, ta: (n & 1) === 1, tb: (n & 2) === 2 })
        n++
      }
  await runAll(t, 'layouts', cases)
})

t.test('alpha, beta and outputs poisoned with NaN', async (t) => {
  await runAll(t, 'alpha/beta', [
    { M: 37, N: 61, K: 67, alpha: 0.5, beta: 0, out: 'nan' },  // beta 0 must overwrite NaN
    { M: 131, N: 17, K: 300, alpha: -1.25, beta: 0, out: 'nan', tb: true },
    { M: 7, N: 131, K: 31, alpha: 1, beta: 1, out: 'values' },
    { M: 61, N: 37, K: 513, alpha: 2, beta: -0.75, out: 'values', ta: true },
    { M: 13, N: 5, K: 1, alpha: 3, beta: 0.5, out: 'values', tb: true, db: 'bfloat16' },
    { M: 151, N: 70, K: 260, alpha: 0.25, beta: 1, out: 'values', la: 'strided', lb: 'T' },
  ])
  // alpha = 0 scales C by beta without a product, as BLAS does
  const c = tensor(new Float32Array([1, 2, 3, 4]), [2, 2])
  matmul(tensor([[1, 2], [3, 4]]), tensor([[5, 6], [7, 8]]), { alpha: 0, beta: 2, out: c })
  t.same(Array.from(await c.data()), [2, 4, 6, 8], 'alpha 0 leaves beta * C')
})

// out as a column slice of a wider tensor (ldc > N): the columns around it must stay untouched
t.test('strided out keeps its neighbours', async (t) => {
  for (const [M, N, K, beta] of [[13, 17, 40, 0], [70, 33, 300, 0.5], [150, 100, 260, 0]]) {
    const W = N + 7
    const init = new Float32Array(M * W)
    for (let i = 0; i < M; i++)
      for (let j = 0; j < W; j++) init[i * W + j] = j >= 3 && j < 3 + N ? (beta === 0 ? NaN : (i + j) / 64) : 1000 + j
    const big = tensor(init, [M, W])
    const A = operand(M, K, 'plain', 'float32', M + N)
    const B = operand(K, N, 'T', 'float32', M + N + 1)
    matmul(A.t, B.t, { out: big.cols(3, 3 + N), beta })
    const got = await big.data()
    let bad = 0
    for (let i = 0; i < M; i++)
      for (let j = 0; j < W; j++) {
        const g = got[i * W + j]
        if (j < 3 || j >= 3 + N) {
          if (g !== 1000 + j) bad++
          continue
        }
        let s = 0, mag = 0
        for (let k = 0; k < K; k++) {
          s += A.at(i, k) * B.at(k, j - 3)
          mag += Math.abs(A.at(i, k) * B.at(k, j - 3))
        }
        const prior = beta === 0 ? 0 : beta * init[i * W + j]
        // as in runCase: chained float32 sums of at most 512 terms plus the epilogue
        const tol = (Math.min(K, 512) + Math.ceil(K / 64) + 4) * U * (mag + Math.abs(prior))
        if (!(Math.abs(g - (s + prior)) <= tol)) bad++
      }
    t.equal(bad, 0, `[${M}x${K}]x[${K}x${N}] into columns 3..${3 + N} of ${W}, beta ${beta}`)
  }
})

t.test('large K', async (t) => {
  await runAll(t, 'large K', [{ M: 7, N: 33, K: 5003 }, { M: 19, N: 40, K: 4096, tb: true, db: 'bfloat16' }])
})

// the row gather (logical row i of A is stored row rows[i]) that layers use: duplicates,
// reversed and scattered indices, f32 and bf16 A, tails of the 6-row and 16-column tiles
t.test('row gather on A', async (t) => {
  const gemmRows = _native._gemmRows as (c: Tensor, a: Tensor, rows: Tensor, b: Tensor, tb: boolean, alpha: number, beta: number) => void
  const bad: string[] = []
  let seed = 500
  for (const [M, R, N, K, tb, da] of [[13, 40, 33, 70, false, 'float32'], [64, 9, 17, 300, true, 'bfloat16'],
    [7, 7, 16, 8, true, 'float32'], [150, 200, 40, 260, false, 'bfloat16']] as [number, number, number, number, boolean, DT][]) {
    const A = operand(R, K, 'plain', da, seed++)
    const B = tb ? operand(N, K, 'strided', 'float32', seed++) : operand(K, N, 'strided', 'float32', seed++)
    const idx = Int32Array.from({ length: M }, (_, i) => (i * 7 + (i % 3 === 0 ? R - 1 : 0)) % R)
    const c0 = values(M * N, seed++)
    const c = tensor(c0, [M, N])
    gemmRows(c, A.t, tensor(idx, [M]), B.t, tb, 1.5, 0.5)
    const got = await c.data()
    for (let i = 0; i < M && bad.length < 3; i++)
      for (let j = 0; j < N; j++) {
        let s = 0, mag = 0
        for (let k = 0; k < K; k++) {
          const p = A.at(idx[i], k) * (tb ? B.at(j, k) : B.at(k, j))
          s += p
          mag += Math.abs(p)
        }
        const prior = 0.5 * c0[i * N + j]
        const want = 1.5 * s + prior
        // as in runCase: chained float32 sums of at most 512 terms plus the epilogue
        const tol = (Math.min(K, 512) + Math.ceil(K / 64) + 4) * U * (1.5 * mag + Math.abs(prior))
        if (!(Math.abs(got[i * N + j] - want) <= tol)) {
          bad.push(`M=${M} R=${R} N=${N} K=${K}: C[${i},${j}] = ${got[i * N + j]}, want ${want}`)
          break
        }
      }
  }
  t.same(bad, [], 'gathered rows match the float64 reference')
})

// the small-M path (M <= 8, decoding: a few rows against big weights read in place, no packing):
// M = 1..9 (the threshold and one past it), K and N around its 8-lane, 3- and 8-row, 8- and
// 64-column blocks and its k blocks (64 for plain B, 512 for B^T), all four transposes
const SMALL_M = 8
const SMALL_NK: [number, number][] = [[1, 1], [3, 7], [8, 8], [13, 9], [67, 31], [131, 64], [200, 65], [70, 513], [9, 1031], [300, 257]]

t.test('small M: every M up to the threshold and past it, all four transposes', async (t) => {
  const cases: Case[] = []
  let n = 0
  for (let M = 1; M <= SMALL_M + 1; M++)
    for (const [N, K] of SMALL_NK) {
      cases.push({ M, N, K, ta: (n & 1) === 1, tb: (n & 2) === 2 })
      cases.push({ M, N, K, ta: (n & 1) === 0, tb: (n & 2) === 0 })
      n++
    }
  // big enough to be split over the pool's threads
  cases.push({ M: 1, N: 1100, K: 700, tb: true }, { M: 1, N: 1100, K: 700 }, { M: 8, N: 200, K: 600, tb: true },
    { M: 5, N: 333, K: 650, ta: true }, { M: 7, N: 4101, K: 40, tb: true, db: 'bfloat16' })
  await runAll(t, 'small M', cases)
})

t.test('small M: strided views, .T views and bfloat16 operands', async (t) => {
  const cases: Case[] = []
  const layouts: Layout[] = ['plain', 'strided', 'T']
  let n = 0
  for (const la of layouts)
    for (const lb of layouts)
      for (const [da, db] of [['float32', 'float32'], ['bfloat16', 'float32'], ['float32', 'bfloat16'], ['bfloat16', 'bfloat16']] as [DT, DT][]) {
        const [N, K] = SMALL_NK[n % SMALL_NK.length]
        cases.push({ M: [1, 2, 3, 4, 7, 8][n % 6], N: N + 5, K, la, lb, da, db, ta: (n & 1) === 1, tb: (n & 2) === 2 })
        n++
      }
  await runAll(t, 'small M layouts', cases)
})

t.test('small M: alpha, beta and outputs poisoned with NaN', async (t) => {
  const cases: Case[] = []
  for (const tb of [false, true])
    for (const [M, N, K] of [[1, 131, 70], [3, 67, 513], [8, 200, 65], [4, 9, 1031]]) {
      cases.push({ M, N, K, tb, alpha: -1.25, beta: 0, out: 'nan' })  // beta 0 must overwrite NaN
      cases.push({ M, N, K, tb, alpha: 0.5, beta: -0.75, out: 'values', db: 'bfloat16', lb: 'strided' })
      cases.push({ M, N, K, tb, ta: true, alpha: 2, beta: 1, out: 'values', la: 'strided' })
    }
  await runAll(t, 'small M alpha/beta', cases)
})

// the row gather through the small-M path: duplicates, reversed and scattered rows, f32 and bf16 A
t.test('small M: row gather on A', async (t) => {
  const gemmRows = _native._gemmRows as (c: Tensor, a: Tensor, rows: Tensor, b: Tensor, tb: boolean, alpha: number, beta: number) => void
  const bad: string[] = []
  let seed = 900
  for (const [M, R, N, K, tb, da] of [[1, 9, 131, 70, true, 'float32'], [3, 5, 67, 513, false, 'bfloat16'],
    [8, 11, 200, 65, true, 'bfloat16'], [5, 40, 1100, 600, false, 'float32'], [8, 3, 9, 1031, false, 'float32']] as [number, number, number, number, boolean, DT][]) {
    const A = operand(R, K, 'plain', da, seed++)
    const B = tb ? operand(N, K, 'strided', 'float32', seed++) : operand(K, N, 'strided', 'float32', seed++)
    const idx = Int32Array.from({ length: M }, (_, i) => (R - 1 - ((i * 7) % R) + (i % 2) * 3) % R)
    const c0 = new Float32Array(M * N).fill(NaN)
    const c = tensor(c0, [M, N])
    gemmRows(c, A.t, tensor(idx, [M]), B.t, tb, -0.5, 0)
    const got = await c.data()
    for (let i = 0; i < M && bad.length < 3; i++)
      for (let j = 0; j < N; j++) {
        let s = 0, mag = 0
        for (let k = 0; k < K; k++) {
          const p = A.at(idx[i], k) * (tb ? B.at(j, k) : B.at(k, j))
          s += p
          mag += Math.abs(p)
        }
        // as in runCase: chained float32 sums of at most 512 terms plus the epilogue
        const tol = (Math.min(K, 512) + Math.ceil(K / 64) + 4) * U * 0.5 * mag
        if (!(Math.abs(got[i * N + j] - -0.5 * s) <= tol)) {
          bad.push(`M=${M} R=${R} N=${N} K=${K}: C[${i},${j}] = ${got[i * N + j]}, want ${-0.5 * s}`)
          break
        }
      }
  }
  t.same(bad, [], 'gathered rows match the float64 reference')
})

// a row's result on the small-M path does not depend on how many rows the product has: the
// blocking differs with M (one stored row of B^T at a time up to M = 2 and K = 2048, groups of
// 8 or 3 past that) but every element is summed in the order K alone fixes. K on both sides of
// 2048 and of the 16-element bfloat16 steps; the engine relies on this (a request's tokens do not
// depend on how many others decode beside it, up to 8)
t.test('small M: a row gets the same bits at every M up to 8', async (t) => {
  const bad: string[] = []
  for (const [N, K] of [[37, 300], [70, 1031], [25, 2048], [19, 2049], [11, 2100], [40, 4096]] as [number, number][])
    for (const db of ['float32', 'bfloat16'] as DT[])
      for (const tb of [true, false]) {
        const a8 = values(8 * K, K + N)
        const b = tensor(values(K * N, N + 3), tb ? [N, K] : [K, N], { dtype: db })
        const all = new Uint32Array((await matmul(tensor(a8, [8, K]), b, { transposeB: tb }).data()).buffer.slice(0))
        for (let M = 1; M < 8; M++) {
          const got = new Uint32Array((await matmul(tensor(a8.slice(0, M * K), [M, K]), b, { transposeB: tb }).data()).buffer.slice(0))
          if (!got.every((x, i) => x === all[i])) bad.push(`[${M}x${K}]x[${K}x${N}] ${db}${tb ? ' B^T' : ''}`)
        }
      }
  t.same(bad, [], 'every M from 1 to 7 gives the first M rows of M = 8 bit for bit')
})

// the pool splits N only (units of 8 rows of B^T at M = 1, 24 at more, 64 columns of plain B),
// once op(B) is past 16384 elements, so a chunk's edge must not change any element; the last
// shapes are just past that size, with odd N, where the chunks' edges fall inside register blocks
t.test('small M: same bits with 1, 2 and 3 threads', async (t) => {
  const before = getNumThreads()
  const shapes: [number, number, number, boolean, DT][] = [[1, 2000, 700, true, 'float32'], [4, 1500, 500, false, 'float32'],
    [8, 1001, 300, true, 'bfloat16'], [3, 777, 1031, false, 'bfloat16'], [7, 650, 900, true, 'float32'],
    [1, 257, 64, true, 'float32'], [2, 101, 200, true, 'float32'], [5, 131, 130, false, 'float32'], [1, 70, 300, false, 'bfloat16']]
  try {
    for (const [M, N, K, tb, db] of shapes) {
      const a = tensor(values(M * K, M + 7), [M, K])
      const b = tensor(values(K * N, N + 7), tb ? [N, K] : [K, N], { dtype: db })
      const bits: Uint32Array[] = []
      for (const n of [1, 2, 3]) {
        setNumThreads(n)
        const c = await matmul(a, b, { transposeB: tb }).data()
        bits.push(new Uint32Array(c.buffer.slice(0)))
      }
      t.same(bits[1], bits[0], `[${M}x${K}]x[${K}x${N}] ${db} 2 threads == 1 thread`)
      t.same(bits[2], bits[0], `[${M}x${K}]x[${K}x${N}] ${db} 3 threads == 1 thread`)
    }
  } finally {
    setNumThreads(before)
  }
})

if (!PORTABLE_CHILD) {
  t.test('same bits with 1, 2 and 3 threads', async (t) => {
    const before = getNumThreads()
    const shapes: [number, number, number, boolean][] = [[300, 200, 700, true], [64, 1000, 300, true], [1000, 40, 260, false]]
    try {
      for (const [M, N, K, tb] of shapes) {
        const a = tensor(values(M * K, M), [M, K])
        const b = tensor(values(K * N, N), tb ? [N, K] : [K, N])
        const bits: Uint32Array[] = []
        for (const n of [1, 2, 3]) {
          setNumThreads(n)
          const c = await matmul(a, b, { transposeB: tb }).data()
          bits.push(new Uint32Array(c.buffer.slice(0)))
        }
        t.same(bits[1], bits[0], `[${M}x${K}]x[${K}x${N}] 2 threads == 1 thread`)
        t.same(bits[2], bits[0], `[${M}x${K}]x[${K}x${N}] 3 threads == 1 thread`)
      }
    } finally {
      setNumThreads(before)
    }
  })

  t.test('the portable kernel (VFFN_GEMM_KERNEL=portable) passes the same checks', async (t) => {
    const r = runSelf(__filename, { VFFN_GEMM_KERNEL: 'portable', VFFN_GEMM_TEST_CHILD: '1' })
    if (r.status !== 0) t.comment(`${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`)
    t.equal(r.status, 0, 'child exits 0')
    t.match(r.stdout, /ok \d+ - kernel portable/, 'the child ran the portable kernel')
  })
} else {
  t.test('kernel portable', async (t) => {
    t.equal(_native.kernelInfo().gemm, 'portable')
  })
}
