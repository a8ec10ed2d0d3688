// the CUDA GEMM's load paths against a float64 reference, element by element, on fresh data:
// every transpose combination and dtype pair (each operand alone decides cp.async or registers,
// K-contiguous or MN-major), K not a multiple of the tile's slice, M/N tails, row leading
// dimensions that forbid 16-byte loads, split-K with several splits (M <= 64, long K), alpha/beta,
// bfloat16 out, and the row gather the layers use (the _gemmRows hook) with both layouts of b and
// the bf16 rounding of float32 operands. scripts/gpu-check.sh also runs this file with
// VFFN_CUDA_GEMM=staged (the old register-staged dispatch) and =nosplit. without a GPU every test
// skips and says why.
import t, { Test } from 'tap'
import { cuda, tensor, matmul, Tensor, _native } from '../lib/index'
import { freshData } from './helpers/fresh'

const SKIP = cuda.available() ? false : `no GPU here, CUDA ops cannot run: ${cuda.reason()}`
const data = freshData(4000) // fresh data on every run; data.seed is printed on failure
const PATH = process.env.VFFN_CUDA_GEMM || 'auto'

type DT = 'float32' | 'bfloat16'
type Layout = 'plain' | 'strided' | 'T'
const U = 2 ** -24

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

// a logical [r, c] operand on the GPU in one layout, and its stored (dtype-rounded) values.
// 'strided': rows 1.. and columns 3.. of a [r + 2, c + 7] tensor, a leading dimension of c + 7
// elements, so row starts are not 16-byte aligned for most c and the operand takes registers;
// 'T': stored [c, r] and passed as the transposed view (matmul reads it as the other layout)
function operand(r: number, c: number, layout: Layout, dtype: DT): { t: Tensor; at: (i: number, j: number) => number } {
  const round = dtype === 'bfloat16' ? bf16Round : (x: number) => x
  if (layout === 'plain') {
    const v = data.fresh(r * c).map(round)
    return { t: tensor(v, [r, c], { dtype }).to('cuda'), at: (i, j) => v[i * c + j] }
  }
  if (layout === 'T') {
    const v = data.fresh(r * c).map(round)
    return { t: tensor(v, [c, r], { dtype }).to('cuda').T, at: (i, j) => v[j * r + i] }
  }
  const ld = c + 7
  const v = data.fresh((r + 2) * ld).map(round)
  return { t: tensor(v, [r + 2, ld], { dtype }).to('cuda').rows(1, r + 1).cols(3, c + 3), at: (i, j) => v[(i + 1) * ld + j + 3] }
}

// every element: |got - want| <= rel * (|alpha| sum |a b| + |beta c0|) + outRel * |want|. rel: the
// tile type's input rounding (tf32: 2^-11 per input; bf16 tiles: exact products, or 2^-9 for a
// float32 operand rounded to bf16) plus float32 accumulation in any order ((K + 16) u); a NaN
// (an element never written over the poisoned out) always fails
async function check(t: Test, got: Tensor, M: number, N: number, K: number, a: (i: number, k: number) => number,
  b: (k: number, j: number) => number, alpha: number, beta: number, c0: Float32Array | null, rel: number, outRel: number, what: string) {
  const g = await got.floatData()
  let bad = 0, first = ''
  const tol = rel + (K + 16) * U
  // op(a) row-major and op(b) transposed, so the inner loop runs over contiguous k
  const am = new Float64Array(M * K), bt = new Float64Array(N * K)
  for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) am[i * K + k] = a(i, k)
  for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) bt[j * K + k] = b(k, j)
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = 0, mag = 0
      for (let k = 0, ia = i * K, jb = j * K; k < K; k++) {
        const p = am[ia + k] * bt[jb + k]
        s += p
        mag += Math.abs(p)
      }
      const prior = c0 ? beta * c0[i * N + j] : 0
      const want = alpha * s + prior
      const err = Math.abs(g[i * N + j] - want)
      if (!(err <= tol * (Math.abs(alpha) * mag + Math.abs(prior)) + outRel * Math.abs(want) + 1e-30)) {
        if (bad++ === 0) first = ` first at [${i}, ${j}]: got ${g[i * N + j]}, want ${want}`
      }
    }
  t.equal(bad, 0, `${what} (${PATH}): ${bad} of ${M * N} elements off${first}${bad ? ` (seed ${data.seed})` : ''}`)
}

const TF32 = 2 ** -10 // two inputs each rounded to 10 mantissa bits
const BF16_ROUND = 2 ** -8 // one float32 input rounded to bf16 (plus the other exact)

async function matmulCase(t: Test, M: number, N: number, K: number, o: { ta: boolean; tb: boolean; da: DT; db: DT; la?: Layout; lb?: Layout;
  alpha?: number; beta?: number; out?: DT }) {
  const la = o.la ?? 'plain', lb = o.lb ?? 'plain'
  const A = o.ta ? operand(K, M, la, o.da) : operand(M, K, la, o.da)
  const B = o.tb ? operand(N, K, lb, o.db) : operand(K, N, lb, o.db)
  const alpha = o.alpha ?? 1, beta = o.beta ?? 0
  const c0 = beta !== 0 ? data.fresh(M * N) : null
  const outDt = o.out ?? 'float32'
  const c0r = c0 && outDt === 'bfloat16' ? c0.map(bf16Round) : c0
  const out = tensor(c0r ?? new Float32Array(M * N).fill(NaN), [M, N], { device: 'cuda', dtype: outDt })
  matmul(A.t, B.t, { transposeA: o.ta, transposeB: o.tb, alpha, beta, out })
  const bothBf16 = o.da === 'bfloat16' && o.db === 'bfloat16'
  await check(t, out, M, N, K, (i, k) => (o.ta ? A.at(k, i) : A.at(i, k)), (k, j) => (o.tb ? B.at(j, k) : B.at(k, j)), alpha, beta, c0r,
    bothBf16 ? 0 : TF32, outDt === 'bfloat16' ? 2 ** -8 : 0,
    `${M}x${N}x${K} ${o.da}${o.ta ? 'ᵀ' : ''}(${la}) x ${o.db}${o.tb ? 'ᵀ' : ''}(${lb})${beta ? ` alpha ${alpha} beta ${beta}` : ''}${outDt === 'bfloat16' ? ' bf16 out' : ''}`)
  for (const x of [A.t, B.t, out]) x.dispose()
}

const PAIRS: [DT, DT][] = [['float32', 'float32'], ['bfloat16', 'bfloat16'], ['bfloat16', 'float32'], ['float32', 'bfloat16']]
const TRANS: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]]

t.test('every transpose and dtype pair, aligned and unaligned rows, tails of M, N and K', { skip: SKIP }, async (t) => {
  // K = 29 < one slice, 65 one past two bf16 slices, 1000 = 62.5 float slices; 129/257 one past
  // the 128-row tiles; 8 columns (one MN-major chunk of bf16) and 1x1x1
  const shapes = [[1, 1, 1], [37, 61, 29], [128, 128, 64], [129, 257, 65], [200, 8, 1000]]
  for (const [M, N, K] of shapes)
    for (const [da, db] of PAIRS)
      for (const [ta, tb] of TRANS) await matmulCase(t, M, N, K, { ta, tb, da, db })
  // unaligned leading dimensions (registers for that operand) against aligned ones, both orders
  for (const [da, db] of PAIRS)
    for (const [ta, tb] of TRANS) {
      await matmulCase(t, 131, 140, 77, { ta, tb, da, db, la: 'strided' })
      await matmulCase(t, 131, 140, 77, { ta, tb, da, db, lb: 'strided' })
    }
  // transposed views (matmul flips them to the stored layout) and the epilogue's alpha/beta/bf16 out
  await matmulCase(t, 70, 90, 130, { ta: false, tb: false, da: 'bfloat16', db: 'bfloat16', la: 'T', lb: 'T', alpha: 0.5, beta: -2 })
  await matmulCase(t, 70, 90, 130, { ta: true, tb: false, da: 'float32', db: 'float32', lb: 'T', alpha: -1.5, beta: 0.25, out: 'bfloat16' })
})

t.test('split-K: few output tiles and a long K (the router and loop-head weight gradients)', { skip: SKIP }, async (t) => {
  // drᵀ·x: a = dr stored [T, M] (transposed), b = x [T, D]; also K-contiguous a, bf16, K tails
  // that leave the last split short, and M = 1
  await matmulCase(t, 64, 256, 4096, { ta: true, tb: false, da: 'bfloat16', db: 'bfloat16' })
  for (const [da, db] of PAIRS.slice(0, 2)) {
    await matmulCase(t, 17, 130, 3001, { ta: true, tb: false, da, db, alpha: 0.5, beta: -2 })
    await matmulCase(t, 8, 136, 5000, { ta: false, tb: true, da, db })
    await matmulCase(t, 1, 9, 2049, { ta: false, tb: false, da, db })
    await matmulCase(t, 64, 96, 700, { ta: true, tb: true, da, db, beta: 1, out: 'bfloat16' })
  }
  await matmulCase(t, 33, 64, 4000, { ta: true, tb: false, da: 'bfloat16', db: 'float32', lb: 'strided' })
})

t.test('row gather on a (the layers\' width path) with both layouts of b and bf16 rounding', { skip: SKIP }, async (t) => {
  const gemmRows = _native._gemmRows as (c: Tensor, a: Tensor, rows: Tensor, b: Tensor, tb: boolean, alpha: number, beta: number, bf16Math: boolean) => void
  // [a dtype, b dtype, bf16Math]: bf16 tiles with both exact, a float32 a or b rounded on load
  // (registers, K-contiguous or MN-major), float tiles widening a bf16 b
  const kinds: [DT, DT, boolean][] = [['float32', 'float32', false], ['bfloat16', 'bfloat16', false], ['float32', 'bfloat16', true],
    ['bfloat16', 'float32', true], ['float32', 'bfloat16', false]]
  for (const [M, R, N, K] of [[13, 40, 33, 70], [150, 200, 140, 260], [129, 64, 136, 300]])
    for (const [da, db, bf16Math] of kinds)
      for (const tb of [false, true])
        for (const lb of ['plain', 'strided'] as Layout[]) {
          const A = operand(R, K, 'plain', da)
          const B = tb ? operand(N, K, lb, db) : operand(K, N, lb, db)
          // duplicates, a reversed run and scattered rows
          const idx = Int32Array.from({ length: M }, (_, i) => (i % 5 === 0 ? R - 1 - (i % R) : (i * 7 + 3) % R))
          const rows = tensor(idx, [M]).to('cuda')
          const c0 = data.fresh(M * N)
          const c = tensor(c0, [M, N], { device: 'cuda' })
          gemmRows(c, A.t, rows, B.t, tb, 1.5, 0.5, bf16Math)
          const bf16Tiles = (da === 'bfloat16' && db === 'bfloat16') || (bf16Math && (da === 'bfloat16' || db === 'bfloat16'))
          const rel = !bf16Tiles ? TF32 : da === db ? 0 : BF16_ROUND
          await check(t, c, M, N, K, (i, k) => A.at(idx[i], k), (k, j) => (tb ? B.at(j, k) : B.at(k, j)), 1.5, 0.5, c0, rel, 0,
            `gather ${M} of ${R} rows x ${N} x ${K}: ${da} a, ${db} b${tb ? 'ᵀ' : ''} (${lb})${bf16Math ? ', bf16 math' : ''}`)
          for (const x of [A.t, B.t, rows, c]) x.dispose()
        }
  // an index outside a fails the op with ERR_ARGUMENT and leaves c as it was
  const a = tensor(data.fresh(8 * 16), [8, 16]).to('cuda'), b = tensor(data.fresh(16 * 4), [16, 4]).to('cuda')
  const c0 = data.fresh(3 * 4)
  const c = tensor(c0, [3, 4], { device: 'cuda' })
  gemmRows(c, a, tensor(Int32Array.from([0, 8, 1]), [3]).to('cuda'), b, false, 1, 0, false)
  await t.rejects(c.data(), { code: 'ERR_ARGUMENT', message: /rows\[1\] = 8 is outside/ }, 'a bad row index fails the output')
})
