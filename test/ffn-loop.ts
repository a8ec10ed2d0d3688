// LoopFFN on CPU against the float64 reference F(F(…F(x))) of test/helpers/ffn-ref.ts: forward for
// several loop counts and ragged sizes, and every gradient against central differences of Σ⟨G, y⟩.
import t from 'tap'
import { DenseFFN, LoopFFN, VersatileFFN, tensor } from '../lib/index'
import { _ffnTestHooks } from '../lib/nn/ffn'
import { Vec, Weights, dense, f32, maxDiff, rand } from './helpers/ffn-ref'

_ffnTestHooks.poison = true

function weights(D: number, I: number, seed: number): Weights {
  return {
    D, I,
    norm: rand(D, seed + 1).map((v) => 1 + 0.5 * v),
    proj: rand(2 * I * D, seed + 2, 1 / Math.sqrt(D)),
    out: rand(D * I, seed + 3, 1 / Math.sqrt(I)),
  }
}
const load = (w: Weights) => ({ 'ff_norm.weight': f32(w.norm), 'ff_proj.weight': f32(w.proj), 'ff_out.weight': f32(w.out) })

function reference(x: Float64Array, w: Weights, T: number, k: number): Float64Array {
  const out = new Float64Array(T * w.D)
  for (let i = 0; i < T; i++) {
    let v: Vec = x.slice(i * w.D, (i + 1) * w.D)
    for (let j = 0; j < k; j++) v = dense(v, w)
    out.set(v, i * w.D)
  }
  return out
}

for (const [name, T, D, I, k] of [
  ['k = 1 (the dense FFN)', 5, 8, 32, 1],
  ['k = 2', 7, 16, 64, 2],
  ['k = 4, ragged', 13, 7, 19, 4],
  ['k = 6, T = 1', 1, 8, 24, 6],
] as [string, number, number, number, number][]) {
  t.test(`loop forward, ${name}`, async (t) => {
    const w = weights(D, I, T * 13 + k)
    const x = rand(T * D, k + 5)
    const ffn = new LoopFFN({ dModel: D, hidden: I, loops: k })
    ffn.loadStateDict(load(w))
    const want = reference(x, w, T, k)
    // float32 kernels vs float64: k chained FFNs of O(1) terms
    const tol = 2e-5 * k
    const y = await ffn.forward(tensor(f32(x), [T, D])).y.data()
    t.ok(maxDiff(y, want) < tol, 'inference y = F^k(x)')
    const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true })
    t.ok(maxDiff(await tr.y.data(), want) < tol, 'training y = F^k(x)')
    tr.dispose()
    if (k === 1) {
      const d = new DenseFFN({ dModel: D, hidden: I })
      d.loadStateDict(load(w))
      t.same(Array.from(y), Array.from(await d.forward(tensor(f32(x), [T, D])).y.data()), 'one loop is exactly the dense FFN')
    }
  })
}

t.test('loop forward equals VersatileFFN depth path at full depth', async (t) => {
  // a loop head that always picks L loops makes λ = 0: VersatileFFN's output is then pure F^L(x)
  const T = 6, D = 8, I = 32, L = 3
  const w = weights(D, I, 77)
  const x = tensor(f32(rand(T * D, 78)), [T, D])
  const loop = new LoopFFN({ dModel: D, hidden: I, loops: L })
  loop.loadStateDict(load(w))
  const v = new VersatileFFN({ dModel: D, hidden: I, maxDepth: L, experts: 2, topK: 1 })
  const depth = new Float32Array(L * D)
  for (let i = 0; i < D; i++) depth[(L - 1) * D + i] = 1 // logit of "L loops" = Σ x, the others 0
  const xs = new Float32Array(await x.data())
  for (let r = 0; r < T; r++) xs[r * D] += 10 // so that Σ x > 0 on every row
  const xt = tensor(xs, [T, D])
  v.loadStateDict({ ...load(w), 'expert_gate.weight': new Float32Array(2 * D), 'depth_predictor.weight': depth })
  const out = v.forward(xt)
  t.same(Array.from(await out.stats.loops.data()), Array(T).fill(L), 'every token takes L loops')
  t.ok(maxDiff(await out.y.data(), await loop.forward(xt).y.data()) < 1e-5, 'same output (same kernels, other row order)')
})

for (const [name, T, D, I, k] of [
  ['k = 2', 5, 6, 16, 2],
  ['k = 4, ragged', 3, 5, 11, 4],
] as [string, number, number, number, number][]) {
  t.test(`loop gradients: ${name}`, async (t) => {
    const w = weights(D, I, 300 + k)
    const x = rand(T * D, 16)
    const G = rand(T * D, 17)
    const ffn = new LoopFFN({ dModel: D, hidden: I, loops: k })
    ffn.loadStateDict(load(w))
    const loss = () => reference(x, w, T, k).reduce((s, v, i) => s + v * G[i], 0)
    const tr = ffn.forward(tensor(f32(x), [T, D]), { train: true })
    ffn.zeroGrad()
    const dx = await ffn.backward(tr, tensor(f32(G), [T, D])).data()
    const h = 1e-6
    const arrays: Record<string, Float64Array> = { x, 'ff_norm.weight': w.norm, 'ff_proj.weight': w.proj, 'ff_out.weight': w.out }
    for (const [n, a] of Object.entries(arrays)) {
      const got = n === 'x' ? dx : await ffn.grads[n].data()
      const want = Array.from(a, (v, i) => {
        a[i] = v + h
        const up = loss()
        a[i] = v - h
        const dn = loss()
        a[i] = v
        return (up - dn) / (2 * h)
      })
      const scale = Math.max(...want.map(Math.abs))
      t.ok(scale > 1e-3, `d ${n} is not negligible`)
      // float32 backward through k chained FFNs vs float64 differences: rounding relative to the scale, plus a floor
      const diff = maxDiff(got, want)
      t.ok(diff < 1e-4 * scale + 1e-7, `d ${n}: max |diff| ${diff.toExponential(2)} (scale ${scale.toExponential(2)})`)
    }
    t.throws(() => ffn.backward(tr, tensor(f32(G), [T, D])), { code: 'ERR_ARGUMENT' }, 'a consumed record is refused')
  })
}

t.test('loop defaults and parameter names (DenseFFN\'s)', async (t) => {
  const ffn = new LoopFFN({ dModel: 8 })
  t.equal(ffn.loops, 4)
  t.equal(ffn.hidden, 32)
  t.same(ffn.namedParameters().map(([n, p]) => [n, p.shape]), [['ff_norm.weight', [8]], ['ff_proj.weight', [64, 8]], ['ff_out.weight', [8, 32]]])
  // any leading shape: [2, 3, D] is the six tokens of [6, D]; backward gives dx the input's shape
  const xs = f32(rand(6 * 8, 21))
  const tr = ffn.forward(tensor(xs, [2, 3, 8]), { train: true })
  t.same(tr.y.shape, [2, 3, 8])
  t.same(Array.from(await tr.y.data()), Array.from(await ffn.forward(tensor(xs, [6, 8])).y.data()), 'the same y')
  t.same(ffn.backward(tr, tensor(f32(rand(6 * 8, 22)), [2, 3, 8])).shape, [2, 3, 8])
  ffn.dispose()
})
