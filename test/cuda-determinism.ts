// every CUDA op run twice on the same inputs gives the same bits (no float atomics anywhere: the
// grouped GEMM stores per position and each token gathers its K rows in order, the RMSNorm and
// embedding weight gradients sum in a fixed order). without a GPU every test skips and says why.
import t, { Test } from 'tap'
import { cuda, tensor, matmul, Tensor, DenseFFN, VersatileFFN } from '../lib/index'
import { rmsnorm, rmsnormBackward } from '../lib/nn/block'
import { freshData } from './helpers/fresh'
import { embedding, embeddingBackward, attention, attentionBackward, crossEntropy, crossEntropyBackward, gradNorm } from '../lib/index'

const SKIP = cuda.available() ? false : `no GPU here, CUDA ops cannot run: ${cuda.reason()}`
const data = freshData(9000) // fresh data on every run; data.seed is printed on failure
const fresh = data.fresh
const cu = (x: Tensor) => x.to('cuda')

// the stored bytes of both, compared whole (NaN payloads included); the first differing element is named
async function sameBits(t: Test, a: Tensor, b: Tensor, what: string) {
  const bytes = async (v: Tensor) => {
    const arr = v.dtype === 'bfloat16' ? await v.rawData() : v.dtype === 'int32' ? await v.intData() : await v.data()
    return Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength)
  }
  const [x, y] = [await bytes(a), await bytes(b)]
  let at = -1
  if (x.length === y.length) for (let i = 0; i < x.length && at < 0; i++) if (x[i] !== y[i]) at = i
  t.ok(x.length === y.length && at < 0, `${what}: identical bits on two runs${at >= 0 ? ` (first difference at byte ${at}, seed ${data.seed})` : ''}`)
}

// run make() twice from the same inputs; every named output must match bit for bit
async function twice(t: Test, what: string, make: () => Record<string, Tensor>) {
  const a = make(), b = make()
  for (const name of Object.keys(a)) await sameBits(t, a[name], b[name], `${what} ${name}`)
}

t.test('matmul: both dtypes, every transpose, a long K', { skip: SKIP }, async (t) => {
  for (const dtype of ['float32', 'bfloat16'] as const)
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]]) {
      const [M, N, K] = [129, 257, 1000]
      const a = cu(tensor(fresh(M * K), ta ? [K, M] : [M, K], { dtype })), b = cu(tensor(fresh(K * N), tb ? [N, K] : [K, N], { dtype }))
      await twice(t, `${dtype} ta=${ta} tb=${tb}`, () => ({ c: matmul(a, b, { transposeA: ta, transposeB: tb }) }))
    }
  // split-K (few output tiles, long K): the partial sums are added in a fixed order
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const [M, N, K] = [64, 1024, 4096]
    const a = cu(tensor(fresh(M * K), [K, M], { dtype })), b = cu(tensor(fresh(K * N), [K, N], { dtype }))
    await twice(t, `${dtype} split-K ${M}x${N}x${K}`, () => ({ c: matmul(a, b, { transposeA: true }) }))
  }
})

t.test('rmsnorm: the weight gradient over many rows (chunked column sums)', { skip: SKIP }, async (t) => {
  for (const [T, D] of [[3, 7], [5000, 96]]) {
    const x = cu(tensor(fresh(T * D, 2), [T, D])), w = cu(tensor(fresh(D), [D])), g = cu(tensor(fresh(T * D), [T, D]))
    const dw0 = fresh(D)
    await twice(t, `[${T}, ${D}]`, () => {
      const f = rmsnorm(x, w, true)
      const dw = cu(tensor(dw0, [D]))
      const dx = rmsnormBackward(g, x, w, f.rstd!, dw)
      return { out: f.out, dx, dw }
    })
  }
})

t.test('dense FFN forward and backward', { skip: SKIP }, async (t) => {
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const [T, D, I] = [300, 128, 320]
    const m = new DenseFFN({ dModel: D, hidden: I, dtype, seed: 7, device: 'cuda' })
    const x = cu(tensor(fresh(T * D), [T, D])), dy = cu(tensor(fresh(T * D), [T, D]))
    await twice(t, dtype, () => {
      m.zeroGrad()
      const r = m.forward(x, { train: true })
      const dx = m.backward(r, dy)
      return { y: r.y, dx, ...Object.fromEntries(Object.entries(m.grads).map(([k, v]) => [k, v.clone()])) }
    })
  }
})

t.test('VersatileFFN: inference (K experts gathered per token) and training (2K terms per norm row)', { skip: SKIP }, async (t) => {
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const [T, D, I, N, K, L] = [333, 64, 256, 8, 3, 3]
    const m = new VersatileFFN({ dModel: D, hidden: I, experts: N, topK: K, maxDepth: L, dtype, seed: 5, device: 'cuda' })
    const x = cu(tensor(fresh(T * D), [T, D])), dy = cu(tensor(fresh(T * D), [T, D]))
    await twice(t, `${dtype} inference`, () => {
      const r = m.forward(x)
      return { y: r.y, loops: r.stats.loops, experts: r.stats.experts, weights: r.stats.weights }
    })
    await twice(t, `${dtype} training`, () => {
      m.zeroGrad()
      const r = m.forward(x, { train: true, seed: 42 })
      const dx = m.backward(r, dy)
      return { y: r.y, dx, ...Object.fromEntries(Object.entries(m.grads).map(([k, v]) => [k, v.clone()])) }
    })
  }
})

t.test('embedding backward: repeated ids (one id 2000 times) sum in token order', { skip: SKIP }, async (t) => {
  const V = 5000, D = 64, T = 6000
  const ids = Int32Array.from(fresh(T), (v, i) => (i % 3 === 0 ? 17 : Math.floor((v + 1) / 2 * V) % V))
  const idt = cu(tensor(ids, [T], { dtype: 'int32' })), g = cu(tensor(fresh(T * D), [T, D])), w = cu(tensor(fresh(V * D), [V, D]))
  const d0 = fresh(V * D)
  await twice(t, `V=${V} T=${T}`, () => {
    const dw = cu(tensor(d0, [V, D]))
    embeddingBackward(dw, g, idt)
    return { dw, out: embedding(w, idt) }
  })
})

t.test('attention, cross-entropy and the gradient norm', { skip: SKIP }, async (t) => {
  const [B, S, H, hd] = [2, 77, 4, 32]
  const q = cu(tensor(fresh(B * S * H * hd), [B, S, H * hd])), k = cu(tensor(fresh(B * S * H * hd), [B, S, H * hd]))
  const v = cu(tensor(fresh(B * S * H * hd), [B, S, H * hd])), dout = cu(tensor(fresh(B * S * H * hd), [B, S, H * hd]))
  await twice(t, 'attention', () => {
    const f = attention(q, k, v, H)
    const gd = { dq: cu(tensor(new Float32Array(q.size), [...q.shape])), dk: cu(tensor(new Float32Array(k.size), [...k.shape])), dv: cu(tensor(new Float32Array(v.size), [...v.shape])) }
    attentionBackward(gd, dout, { q, k, v, out: f.out, lse: f.lse }, H)
    return { out: f.out, lse: f.lse, ...gd }
  })
  const T = 500, V = 3001
  const logits = cu(tensor(fresh(T * V, 4), [T, V]))
  const targets = cu(tensor(Int32Array.from(fresh(T), (x) => Math.floor((x + 1) / 2 * V) % V), [T], { dtype: 'int32' }))
  await twice(t, 'cross-entropy', () => {
    const f = crossEntropy(logits, targets)
    return { loss: f.loss, lse: f.lse, dlogits: crossEntropyBackward(logits, targets, f.lse, 0.7) }
  })
  const gs = [logits, q]
  await twice(t, 'gradient norm', () => ({ norm: gradNorm(gs, 1) }))
})
