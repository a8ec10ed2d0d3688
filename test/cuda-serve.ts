// the serving ops on CUDA against the CPU ops on the same data (skipped, with the reason, without a GPU)
import t from 'tap'
import { cuda, randn, tensor, kvWrite, pagedAttention, ropeRows, sample } from '../lib/index'

const SKIP = cuda.available() ? false : `no CUDA device: ${cuda.reason()}`
const ints = (a: number[], shape = [a.length]) => tensor(Int32Array.from(a), shape, { dtype: 'int32' })
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

t.test('kvWrite and pagedAttention: CUDA equals CPU', { skip: SKIP }, async (t) => {
  const NB = 9, BS = 4, H = 2, hd = 40, D = H * hd, MB = 3
  const kp = randn([NB, BS, D], { seed: 1 }), vp = randn([NB, BS, D], { seed: 2 })
  const k = randn([5, D], { seed: 3 }), v = randn([5, D], { seed: 4 })
  const slots = ints([35, 2, 17, 8, 20])
  const [kpc, vpc] = [kp.to('cuda'), vp.to('cuda')]
  kvWrite(kp, vp, k, v, slots)
  kvWrite(kpc, vpc, k.to('cuda'), v.to('cuda'), slots.to('cuda'))
  t.same([...(await kpc.data())], [...(await kp.data())], 'the pools are written alike, bit for bit')
  const table = ints([8, 0, 4, 2, 6, 1, 3, 5, 7], [3, MB])
  const lens = ints([12, 3, 7])
  for (const Sq of [1, 3]) {
    const q = randn([3, Sq, D], { seed: 5 + Sq })
    const ref = pagedAttention(q, kp, vp, table, lens, H)
    const got = pagedAttention(q.to('cuda'), kpc, vpc, table.to('cuda'), lens.to('cuda'), H)
    // float32 dots in another order and __expf: ~1e-6 relative
    t.ok(maxDiff(await got.data(), await ref.data()) < 1e-4, `Sq = ${Sq}`)
  }
  const bad = pagedAttention(randn([3, 1, D]).to('cuda'), kpc, vpc, table.to('cuda'), ints([12, 13, 1]).to('cuda'), H)
  await t.rejects(bad.data(), { code: 'ERR_ARGUMENT', message: /lens: sequence 1 has length 13/ })
})

t.test('ropeRows and sample: CUDA equals CPU', { skip: SKIP }, async (t) => {
  const x = randn([3, 4, 32], { seed: 9 })
  const starts = ints([0, 9, 300])
  const xc = x.to('cuda')
  ropeRows(x, 4, starts)
  ropeRows(xc, 4, starts.to('cuda'))
  t.ok(maxDiff(await xc.data(), await x.data()) < 1e-5, 'rotary at per-row positions')
  const logits = randn([6, 50], { seed: 10 })
  const params = tensor(Float32Array.from([0, 0, 1, 0.2, 1, 0, 1, 0.7, 0.8, 5, 1, 0.1, 1.2, 0, 0.9, 0.5, 1, 3, 0.5, 0.99, 2, 50, 0.3, 0.4]), [6, 4])
  const a = sample(logits, params), b = sample(logits.to('cuda'), params.to('cuda'))
  t.same([...(await b.ids.data())], [...(await a.ids.data())], 'the same ids')
})
