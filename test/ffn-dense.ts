// DenseFFN and RMSNorm on CPU against the float64 references of test/helpers/ffn-ref.ts:
// forward, every gradient by finite differences, bfloat16 weights, training records.
import t from 'tap'
import { DenseFFN, _native, full, tensor } from '../lib/index'
import { _ffnTestHooks } from '../lib/nn/ffn'
import { Weights, dense, norm, rand } from './helpers/ffn-ref'

_ffnTestHooks.poison = true

const f32 = (a: Float64Array) => Float32Array.from(a)

function setup(T: number, D: number, I: number, seed: number) {
  // weights of unit-ish scale so the FFN term is as large as the residual (a weak term hides bugs)
  const w: Weights = {
    D, I,
    norm: rand(D, seed + 1, 1).map((v) => 1 + 0.5 * v),
    proj: rand(2 * I * D, seed + 2, 1 / Math.sqrt(D)),
    out: rand(D * I, seed + 3, 1 / Math.sqrt(I)),
  }
  const x = rand(T * D, seed + 4, 1)
  const ffn = new DenseFFN({ dModel: D, hidden: I })
  ffn.loadStateDict({ 'ff_norm.weight': f32(w.norm), 'ff_proj.weight': f32(w.proj), 'ff_out.weight': f32(w.out) })
  return { w, x, ffn }
}

function refForward(x: Float64Array, w: Weights, T: number): Float64Array {
  const out = new Float64Array(T * w.D)
  for (let i = 0; i < T; i++) out.set(dense(x.subarray(i * w.D, (i + 1) * w.D), w), i * w.D)
  return out
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return Number.isNaN(a[0]) || a.length !== b.length ? Infinity : m
}

for (const [T, D, I] of [[1, 8, 16], [7, 16, 64], [13, 12, 20]]) {
  t.test(`dense forward T=${T} D=${D} I=${I}`, async (t) => {
    const { w, x, ffn } = setup(T, D, I, T * 100 + D)
    const ref = refForward(x, w, T)
    const out = ffn.forward(tensor(f32(x), [T, D]), { train: false })
    // float32 kernels against float64: sums of D and I products of O(1) terms
    t.ok(maxDiff(await out.y.data(), ref) < 2e-5, 'inference y')
    const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true })
    t.ok(maxDiff(await tr.y.data(), ref) < 2e-5, 'training y')
    tr.dispose()
  })
}

t.test('dense gradients against float64 finite differences', async (t) => {
  const T = 5, D = 6, I = 10
  const { w, x, ffn } = setup(T, D, I, 7)
  const G = rand(T * D, 99, 1)
  const loss = (xx: Float64Array, ww: Weights) => refForward(xx, ww, T).reduce((a, v, i) => a + v * G[i], 0)
  const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true })
  ffn.zeroGrad()
  const dx = await ffn.backward(tr, tensor(f32(G), [T, D])).data()
  const h = 1e-6
  const fd = (get: () => Float64Array, i: number, f: () => number) => {
    const a = get(), v = a[i]
    a[i] = v + h
    const up = f()
    a[i] = v - h
    const dn = f()
    a[i] = v
    return (up - dn) / (2 * h)
  }
  const cases: [string, ArrayLike<number>, () => Float64Array][] = [
    ['x', dx, () => x],
    ['ff_norm.weight', await ffn.grads['ff_norm.weight'].data(), () => w.norm],
    ['ff_proj.weight', await ffn.grads['ff_proj.weight'].data(), () => w.proj],
    ['ff_out.weight', await ffn.grads['ff_out.weight'].data(), () => w.out],
  ]
  for (const [name, got, arr] of cases) {
    const want = Array.from({ length: got.length }, (_, i) => fd(arr, i, () => loss(x, w)))
    // float32 backward vs float64 central differences (error ~h² · f''' ≈ 1e-10): float32 rounding dominates
    const scale = Math.max(...want.map(Math.abs))
    t.ok(maxDiff(got, want) < 1e-4 * Math.max(1, scale), `d ${name} (max |diff| ${maxDiff(got, want).toExponential(2)})`)
  }
  // backward accumulates: a second pass doubles the weight gradients
  const before = await ffn.grads['ff_out.weight'].data()
  const tr2 = ffn.forward(tensor(f32(x), [T, D]), { train: true })
  ffn.backward(tr2, tensor(f32(G), [T, D]))
  const after = await ffn.grads['ff_out.weight'].data()
  t.ok(maxDiff(after, before.map((v) => 2 * v)) < 1e-5, 'gradients accumulate') // two identical float32 sums
  t.throws(() => ffn.backward(tr2, tensor(f32(G), [T, D])), { code: 'ERR_ARGUMENT' }, 'a used record is refused')
})

t.test('dense bfloat16 weights', async (t) => {
  const T = 4, D = 8, I = 16
  const { w, x } = setup(T, D, I, 3)
  const ffn = new DenseFFN({ dModel: D, hidden: I, dtype: 'bfloat16' })
  ffn.loadStateDict({ 'ff_norm.weight': f32(w.norm), 'ff_proj.weight': f32(w.proj), 'ff_out.weight': f32(w.out) })
  // the reference on the bf16-rounded weights
  const sd = ffn.stateDict()
  const wr: Weights = { D, I, norm: Float64Array.from(await sd['ff_norm.weight'].data()), proj: Float64Array.from(await sd['ff_proj.weight'].data()), out: Float64Array.from(await sd['ff_out.weight'].data()) }
  t.ok(maxDiff(wr.proj, w.proj) > 0, 'weights were rounded')
  const y = await ffn.forward(tensor(f32(x), [T, D])).y.data()
  t.ok(maxDiff(y, refForward(x, wr, T)) < 2e-5, 'y with bf16 weights') // same float32 accumulation as above
})

t.test('rmsnorm op: forward and backward against float64', async (t) => {
  const T = 5, D = 7
  const x = rand(T * D, 21), w = rand(D, 22).map((v) => 1 + 0.5 * v), G = rand(T * D, 23)
  const ref = (xx: Float64Array, ww: Float64Array) => {
    const out = new Float64Array(T * D)
    for (let i = 0; i < T; i++) out.set(norm(xx.subarray(i * D, (i + 1) * D), ww), i * D)
    return out
  }
  const op = _native as unknown as Record<string, (...a: unknown[]) => void>
  const out = full([T, D], NaN), rstd = full([T], NaN)
  const xt = tensor(f32(x), [T, D]), wt = tensor(f32(w))
  op.rmsnormForward(out, rstd, xt, wt, 1e-6)
  t.ok(maxDiff(await out.data(), ref(x, w)) < 1e-6, 'forward') // one float32 rounding of O(1) values
  const dx = full([T, D], NaN), dw = full([D], 0)
  op.rmsnormBackward(dx, dw, tensor(f32(G), [T, D]), xt, wt, rstd)
  const loss = () => ref(x, w).reduce((a, v, i) => a + v * G[i], 0)
  const fd = (a: Float64Array, i: number) => {
    const v = a[i]
    a[i] = v + 1e-6
    const up = loss()
    a[i] = v - 1e-6
    const dn = loss()
    a[i] = v
    return (up - dn) / 2e-6
  }
  // float32 kernel vs float64 central differences
  t.ok(maxDiff(await dx.data(), Array.from(x, (_, i) => fd(x, i))) < 1e-5, 'dx')
  t.ok(maxDiff(await dw.data(), Array.from(w, (_, i) => fd(w, i))) < 1e-5, 'dweight (accumulated onto 0)')
})
