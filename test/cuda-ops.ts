// every CUDA op against the CPU op (the oracle) on fresh random data, through the public API:
// copy/fill, matmul, RMSNorm, the dense FFN and VersatileFFN forward and backward, a few training
// steps. without a GPU every test skips and says why.
import t, { Test } from 'tap'
import { cuda, device, empty, randn, tensor, matmul, Tensor, DenseFFN, VersatileFFN } from '../lib/index'
import { rmsnorm, rmsnormBackward } from '../lib/nn/block'
import { relErr } from './helpers/data'

const SKIP = cuda.available() ? false : `no GPU here, CUDA ops cannot run: ${cuda.reason()}`
let seedCounter = 1000 + Math.floor(Math.random() * 1e6) // fresh data on every run; printed on failure

// values in [-1, 1) from mulberry32
function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    out[i] = ((((x ^ (x >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale
  }
  return out
}
const fresh = (n: number, scale = 1) => values(n, seedCounter++, scale)

// ‖got − want‖ / ‖want‖ in float64; NaN anywhere (an unwritten poisoned output) is Infinity

async function close(t: Test, got: Tensor, want: Tensor, tol: number, what: string) {
  const e = relErr(await got.floatData(), await want.floatData())
  t.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} <= ${tol} (seed base ${seedCounter})`)
}

// tolerances, by what the GPU computes differently from the CPU:
// float32 operands run as tf32 on tensor cores (10-bit mantissa inputs): ~5e-4 relative, bound 3e-3
const TOL_TF32 = 3e-3
// bfloat16 operands are exact in both; only the float32 summation order differs
const TOL_BF16_IN = 1e-4
// elementwise float32 kernels (norm, copy): rounding order only
const TOL_F32 = 1e-5
// layers chain tensor-core GEMMs (tf32 for float32 weights; bfloat16 weights take bf16 inputs,
// ~3e-3 each): 2 per forward loop, up to 5 per backward loop, L loops deep
const TOL_LAYER = 1e-2

t.test('caching allocator: steady state reuses blocks; out of memory is ERR_OOM and the device stays usable', { skip: SKIP }, async (t) => {
  const dev = device('cuda')
  const warm = randn([300, 300]).to('cuda')
  warm.dispose()
  await dev.sync()
  const before = dev.memory()
  for (let i = 0; i < 100; i++) randn([300, 300]).to('cuda').dispose()
  await dev.sync()
  const after = dev.memory()
  t.equal(after.live, before.live, `live bytes back to ${before.live}`)
  t.equal(after.cached, before.cached, 'the cache served every block: nothing new from the driver')
  // 2^40 float32 = 4 TiB: no GPU has it. memory is taken when the first op touches the tensor
  const huge = empty([2 ** 20, 2 ** 20], { device: 'cuda' })
  huge.fill_(1)
  await dev.sync() // out of memory is the op's failure, not the device's
  // read it through a small copy: data() of the whole 4 TiB would fail on host memory first
  const probe = huge.rows(0, 1).cols(0, 4).clone()
  await t.rejects(probe.data(), { code: 'ERR_OOM', message: /out of memory on cuda:0/ }, 'the failed allocation fails the tensor it was for, and what reads it')
  probe.dispose()
  huge.dispose()
  const x = tensor([1, 2, 3], undefined, { device: 'cuda' })
  t.same(Array.from(await x.data()), [1, 2, 3], 'the device works afterwards')
})

t.test('copy and fill: dtype conversion and strided views agree bit for bit', { skip: SKIP }, async (t) => {
  for (const [r, c] of [[1, 1], [3, 17], [129, 65]]) {
    const host = tensor(fresh(r * c, 3), [r, c])
    const dev = host.to('cuda')
    t.same(await dev.data(), await host.data(), `round trip [${r}, ${c}]`)
    // f32 -> bf16 on each device: round to nearest even in both
    t.same(await dev.astype('bfloat16').rawData(), await host.astype('bfloat16').rawData(), 'bf16 rounding')
    // a strided view (a column slice and a transpose) gathered on the device
    if (c > 2) {
      const vd = dev.cols(1, c - 1).T.contiguous(), vh = host.cols(1, c - 1).T.contiguous()
      t.same(await vd.data(), await vh.data(), 'strided copy')
    }
    const f = tensor(fresh(r * c), [r, c], { device: 'cuda', dtype: 'bfloat16' }).fill_(-1.7)
    const fc = tensor(fresh(r * c), [r, c], { dtype: 'bfloat16' }).fill_(-1.7)
    t.same(await f.rawData(), await fc.rawData(), 'fill in bf16')
  }
})

t.test('matmul: ragged sizes, transposes, strided views, alpha/beta, both dtypes', { skip: SKIP }, async (t) => {
  const shapes = [[1, 1, 1], [1, 9, 13], [37, 61, 29], [128, 128, 64], [129, 257, 65], [300, 17, 1000], [2, 513, 3]]
  for (const [M, N, K] of shapes)
    for (const dtype of ['float32', 'bfloat16'] as const)
      for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
        const a = tensor(fresh(M * K), ta ? [K, M] : [M, K], { dtype })
        const b = tensor(fresh(K * N), tb ? [N, K] : [K, N], { dtype })
        const want = matmul(a, b, { transposeA: ta, transposeB: tb })
        const got = matmul(a.to('cuda'), b.to('cuda'), { transposeA: ta, transposeB: tb })
        await close(t, got, want, dtype === 'float32' ? TOL_TF32 : TOL_BF16_IN, `${dtype} ${M}x${N}x${K} ta=${ta} tb=${tb}`)
      }
  // a strided operand (a row and column slice of a larger matrix) and beta accumulating into a NaN-free out
  const big = tensor(fresh(70 * 90), [70, 90])
  const a = big.rows(3, 68).cols(5, 84)
  const b = tensor(fresh(79 * 33), [79, 33])
  const c0 = fresh(65 * 33)
  const want = matmul(a, b, { alpha: 0.5, beta: -2, out: tensor(c0, [65, 33]) })
  const got = matmul(a.to('cuda'), b.to('cuda'), { alpha: 0.5, beta: -2, out: tensor(c0, [65, 33], { device: 'cuda' }) })
  await close(t, got, want, TOL_TF32, 'strided a, alpha 0.5, beta -2')
  // beta = 0 must not read a NaN-poisoned out; a bfloat16 out rounds once
  const outNaN = tensor(new Float32Array(65 * 33).fill(NaN), [65, 33], { device: 'cuda' })
  await close(t, matmul(a.to('cuda'), b.to('cuda'), { out: outNaN }), matmul(a, b), TOL_TF32, 'beta 0 over NaN')
  const out16 = tensor(new Float32Array(65 * 33).fill(NaN), [65, 33], { device: 'cuda', dtype: 'bfloat16' })
  // float32 out rounded to bfloat16 once: 2^-9 relative per element on top of tf32
  await close(t, matmul(a.to('cuda'), b.to('cuda'), { out: out16 }), matmul(a, b), TOL_TF32 + 4e-3, 'bfloat16 out')
})

t.test('rmsnorm forward and backward', { skip: SKIP }, async (t) => {
  for (const [T, D] of [[1, 1], [5, 33], [130, 256]])
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const x = tensor(fresh(T * D, 2), [T, D])
      const w = tensor(fresh(D), [D], { dtype })
      const g = tensor(fresh(T * D), [T, D])
      const c = rmsnorm(x, w, true), d = rmsnorm(x.to('cuda'), w.to('cuda'), true)
      await close(t, d.out, c.out, TOL_F32, `forward ${dtype} [${T}, ${D}]`)
      await close(t, d.rstd!, c.rstd!, TOL_F32, 'rstd')
      const dwc = tensor(fresh(D), [D]), dwd = dwc.to('cuda')
      const dxc = rmsnormBackward(g, x, w, c.rstd!, dwc)
      const dxd = rmsnormBackward(g.to('cuda'), x.to('cuda'), w.to('cuda'), d.rstd!, dwd)
      await close(t, dxd, dxc, TOL_F32 * 10, 'dx') // a dot product per row, summed in another order
      await close(t, dwd, dwc, TOL_F32 * 10, 'dweight (accumulated onto random values)')
    }
})

function pair<M extends DenseFFN | VersatileFFN>(make: (device: 'cpu' | 'cuda') => M): [M, M] {
  return [make('cpu'), make('cuda')]
}

async function sameGrads(t: Test, c: DenseFFN | VersatileFFN, d: DenseFFN | VersatileFFN, tol: number, what: string) {
  for (const name of Object.keys(c.grads)) await close(t, d.grads[name], c.grads[name], tol, `${what}: grad ${name}`)
}

t.test('dense FFN forward and backward', { skip: SKIP }, async (t) => {
  for (const [T, D, I] of [[1, 8, 16], [37, 64, 96], [200, 128, 320]])
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const [c, d] = pair((device) => new DenseFFN({ dModel: D, hidden: I, dtype, seed: 7, device }))
      const x = tensor(fresh(T * D), [T, D]), dy = tensor(fresh(T * D), [T, D])
      await close(t, d.forward(x.to('cuda')).y, c.forward(x).y, TOL_LAYER, `inference ${dtype} T=${T}`)
      const rc = c.forward(x, { train: true }), rd = d.forward(x.to('cuda'), { train: true })
      await close(t, rd.y, rc.y, TOL_LAYER, 'training forward')
      await close(t, d.backward(rd, dy.to('cuda')), c.backward(rc, dy), TOL_LAYER, 'dx')
      await sameGrads(t, c, d, TOL_LAYER, `${dtype} T=${T}`)
    }
})

interface VCase { name: string; T: number; N: number; K: number; L: number; D: number; I: number; expert?: number; depth?: number }

// routing is piecewise constant: a logit pair within rounding of each other may pick differently
// on the two backends. tokens are compared where both chose the same loops and experts, and at
// most one token in 64 may differ.
async function compareVersatile(t: Test, c: VersatileFFN, d: VersatileFFN, x: Tensor, train: boolean, what: string) {
  const oc = train ? c.forward(x, { train: true, seed: 99 }) : c.forward(x)
  const od = train ? d.forward(x.to('cuda'), { train: true, seed: 99 }) : d.forward(x.to('cuda'))
  const [lc, ld, ec, ed] = await Promise.all([oc.stats.loops.intData(), od.stats.loops.intData(), oc.stats.experts.intData(), od.stats.experts.intData()])
  const T = x.shape[0], K = c.topK, D = c.dModel
  const agree: number[] = []
  for (let i = 0; i < T; i++) {
    let same = lc[i] === ld[i]
    for (let k = 0; k < K; k++) same &&= ec[i * K + k] === ed[i * K + k]
    if (same) agree.push(i)
  }
  t.ok(T - agree.length <= Math.floor(T / 64), `${what}: routing agrees on ${agree.length}/${T} tokens`)
  // rows of a [T, w] output, for the tokens routed alike
  const pick = (v: Float32Array, w: number) => Float32Array.from(agree.flatMap((i) => Array.from(v.subarray(i * w, (i + 1) * w))))
  const e = relErr(pick(await od.y.data(), D), pick(await oc.y.data(), D))
  t.ok(e <= TOL_LAYER, `${what}: y relative error ${e.toExponential(2)}`)
  // λ = (L − loops)/L is one correctly rounded division on both backends (L = 3 gives 1/3, 2/3)
  t.same(pick(await od.stats.lambda.data(), 1), pick(await oc.stats.lambda.data(), 1), `${what}: λ bit for bit`)
  const ew = relErr(pick(await od.stats.weights.data(), K), pick(await oc.stats.weights.data(), K))
  t.ok(ew <= TOL_LAYER, `${what}: routing weights relative error ${ew.toExponential(2)}`)
  if (agree.length === T) t.same(await od.stats.expertCounts.intData(), await oc.stats.expertCounts.intData(), `${what}: expert counts`)
  return { oc, od, agree: agree.length === T }
}

t.test('VersatileFFN forward and backward, edge shapes included', { skip: SKIP }, async (t) => {
  const cases: VCase[] = [
    { name: 'one token', T: 1, N: 4, K: 2, L: 3, D: 32, I: 64 },
    { name: 'ragged', T: 77, N: 8, K: 2, L: 4, D: 64, I: 128 },
    { name: 'every token on expert 2 (others empty)', T: 50, N: 4, K: 1, L: 2, D: 32, I: 64, expert: 2 },
    { name: 'every token at depth L', T: 45, N: 4, K: 2, L: 3, D: 32, I: 96, depth: 2 },
  ]
  for (const cs of cases)
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const opts = { dModel: cs.D, hidden: cs.I, experts: cs.N, topK: cs.K, maxDepth: cs.L, dtype, seed: 3 }
      const [c, d] = pair((device) => new VersatileFFN({ ...opts, device }))
      const xs = fresh(cs.T * cs.D)
      if (cs.expert !== undefined || cs.depth !== undefined) {
        // a constant first feature and a large weight on it make one logit win for every token
        for (let i = 0; i < cs.T; i++) xs[i * cs.D] = 4
        const sd: Record<string, Float32Array> = {}
        for (const [name, p] of c.namedParameters()) sd[name] = await p.floatData()
        if (cs.expert !== undefined) sd['expert_gate.weight'][cs.expert * cs.D] = 50
        if (cs.depth !== undefined) sd['depth_predictor.weight'][cs.depth * cs.D] = 50
        c.loadStateDict(sd)
        d.loadStateDict(sd)
      }
      const x = tensor(xs, [cs.T, cs.D])
      const what = `${cs.name} ${dtype}`
      const inf = await compareVersatile(t, c, d, x, false, `${what} inference`)
      if (cs.depth !== undefined) t.same(Array.from(await inf.od.stats.loops.intData()), new Array(cs.T).fill(cs.L), 'all at depth L')
      if (cs.expert !== undefined) t.same(Array.from(await inf.od.stats.experts.intData()), new Array(cs.T).fill(cs.expert), 'all on one expert')
      const tr = await compareVersatile(t, c, d, x, true, `${what} training`)
      const rc = tr.oc as ReturnType<VersatileFFN['forward']> & { auxLoss: Tensor }
      const rd = tr.od as typeof rc
      if (!tr.agree) continue // the balance loss and gradients follow the routing: compared only where it matched
      await close(t, rd.auxLoss, rc.auxLoss, TOL_LAYER, `${what}: balance loss`)
      const dy = tensor(fresh(cs.T * cs.D), [cs.T, cs.D])
      await close(t, d.backward(rd, dy.to('cuda')), c.backward(rc, dy), TOL_LAYER, `${what}: dx`)
      await sameGrads(t, c, d, TOL_LAYER, what)
    }
})

t.test('a few training steps agree', { skip: SKIP }, async (t) => {
  const opts = { dModel: 48, hidden: 96, experts: 4, topK: 2, maxDepth: 3, seed: 11 }
  const [c, d] = pair((device) => new VersatileFFN({ ...opts, device }))
  const x = tensor(fresh(40 * 48), [40, 48]), target = tensor(fresh(40 * 48), [40, 48])
  for (let step = 0; step < 3; step++) {
    for (const m of [c, d]) {
      const xm = x.to(m.device)
      const rec = m.forward(xm, { train: true, step, noise: 'none' })
      // loss = ½‖y − target‖²: dy = y − target, computed on the host for both
      const y = await rec.y.data(), tg = await target.data()
      const dy = tensor(y.map((v, i) => v - tg[i]), [40, 48], { device: m.device })
      m.zeroGrad()
      m.backward(rec, dy)
      // plain SGD, on the host so both modules take the same update rule
      const sd: Record<string, Float32Array> = {}
      for (const [name, p] of m.namedParameters()) {
        const pv = await p.floatData(), gv = await m.grads[name].floatData()
        sd[name] = pv.map((v, i) => v - 0.05 * gv[i])
      }
      m.loadStateDict(sd)
    }
    for (const [name, p] of c.namedParameters()) await close(t, d.params[name], p, TOL_LAYER, `step ${step}: ${name}`)
  }
})
