// Same seed → same Gumbel noise → bit-identical outputs and gradients, run to run and across
// thread counts (no reduction is split in a thread-count-dependent way).
import t from 'tap'
import { DenseFFN, VersatileFFN, cuda, getNumThreads, setNumThreads, tensor } from '../lib/index'
import { rand } from './helpers/ffn-ref'

const T = 97, D = 64, I = 256
const x = Float32Array.from(rand(T * D, 1))
const G = Float32Array.from(rand(T * D, 2))

async function versatileRun(threads: number) {
  setNumThreads(threads)
  const ffn = new VersatileFFN({ dModel: D, hidden: I, experts: 8, topK: 2, maxDepth: 4, seed: 3 })
  // larger weights than the 0.02 init so routing and depth spread out
  for (const [name, p] of ffn.namedParameters())
    if (name !== 'ff_norm.weight') ffn.loadStateDict({ ...ffn.stateDict(), [name]: Float32Array.from(rand(p.size, name.length, 0.3)) })
  const inf = ffn.forward(tensor(x, [T, D]))
  const tr = ffn.forward(tensor(x, [T, D]), { train: true, step: 10, noise: 'gumbel', seed: 42 })
  const dx = ffn.backward(tr, tensor(G, [T, D]))
  const out: Record<string, number[]> = {
    inference: Array.from(await inf.y.data()),
    loops: Array.from(await inf.stats.loops.data()),
    train: Array.from(await tr.y.data()),
    trainLoops: Array.from(await tr.stats.loops.data()),
    aux: Array.from(await tr.auxLoss.data()),
    dx: Array.from(await dx.data()),
  }
  for (const [name, g] of Object.entries(ffn.grads)) out[name] = Array.from(await g.data())
  ffn.dispose()
  return out
}

async function denseRun(threads: number) {
  setNumThreads(threads)
  const ffn = new DenseFFN({ dModel: D, hidden: I, seed: 4 })
  const tr = ffn.forward(tensor(x, [T, D]), { train: true })
  const dx = ffn.backward(tr, tensor(G, [T, D]))
  const out: Record<string, number[]> = { y: Array.from(await tr.y.data()), dx: Array.from(await dx.data()) }
  for (const [name, g] of Object.entries(ffn.grads)) out[name] = Array.from(await g.data())
  return out
}

t.test('bit-identical at 1, 2 and 3 threads and run to run', async (t) => {
  const before = getNumThreads()
  const v1 = await versatileRun(1), v2 = await versatileRun(2), v3 = await versatileRun(3), v2b = await versatileRun(2)
  const d1 = await denseRun(1), d3 = await denseRun(3)
  setNumThreads(before)
  t.ok(new Set(v1.loops).size > 1 && new Set(v1.trainLoops).size > 1, 'tokens spread over depths')
  for (const k of Object.keys(v1)) {
    t.same(v2[k], v1[k], `versatile ${k}: 2 threads = 1 thread`)
    t.same(v3[k], v1[k], `versatile ${k}: 3 threads = 1 thread`)
    t.same(v2b[k], v2[k], `versatile ${k}: run to run`)
  }
  for (const k of Object.keys(d1)) t.same(d3[k], d1[k], `dense ${k}: 3 threads = 1 thread`)
})

t.test('CUDA device mismatch', { skip: cuda.available() ? false : 'no CUDA device here; device mismatch is checked where one exists' }, async (t) => {
  const ffn = new VersatileFFN({ dModel: 8, hidden: 32, experts: 4, topK: 2, maxDepth: 2 })
  const xg = tensor(Float32Array.from(rand(16, 1)), [2, 8], { device: 'cuda' })
  t.throws(() => ffn.forward(xg), { code: 'ERR_DEVICE' })
  t.throws(() => ffn.loadStateDict({ ...ffn.stateDict(), 'ff_norm.weight': xg.reshape([16]).slice(0, 0, 8) }), { code: 'ERR_DEVICE' })
})
