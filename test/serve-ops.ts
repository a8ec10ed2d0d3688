// the serving ops against plainly written references: writes into a paged KV cache, attention
// over it with ragged lengths and shuffled blocks (float64 reference, and the contiguous attention
// op), rotary embedding at per-row positions, and sampling on the device (a JS reference of the
// documented rule on fixed logits: ties, top-k and top-p boundaries, u at the edges).
import t from 'tap'
import { mulberry32 } from '../lib/random'
import { runSelf } from './helpers/child'
import { tensor, randn, attention, rope, kvWrite, pagedAttention, ropeRows, sample, Tensor, _native } from '../lib/index'

const ints = (a: number[]) => tensor(Int32Array.from(a), [a.length], { dtype: 'int32' })
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}

t.test('kvWrite puts each row at its slot and nothing else changes', async (t) => {
  const NB = 5, BS = 4, D = 6
  const kp = randn([NB, BS, D], { seed: 1 }), vp = randn([NB, BS, D], { seed: 2 })
  const k = randn([7, D], { seed: 3 }), v = randn([7, D], { seed: 4 })
  const slots = [19, 0, 7, 8, 3, 12, 5]
  const [k0, v0, kv, vv] = await Promise.all([kp.data(), vp.data(), k.data(), v.data()])
  kvWrite(kp, vp, k, v, ints(slots))
  const ref = (pool: Float32Array, rows: Float32Array) => {
    const r = Float32Array.from(pool)
    slots.forEach((s, i) => r.set(rows.subarray(i * D, (i + 1) * D), s * D))
    return r
  }
  t.same([...(await kp.data())], [...ref(k0, kv)])
  t.same([...(await vp.data())], [...ref(v0, vv)])
  // a slot outside the pool fails the op before it writes; other tensors are unaffected
  const kp2 = randn([2, 2, D], { seed: 5 }), vp2 = randn([2, 2, D], { seed: 6 })
  kvWrite(kp2, vp2, k.rows(0, 2), v.rows(0, 2), ints([1, 4]))
  await t.rejects(kp2.data(), { code: 'ERR_ARGUMENT', message: /slots: slot 4 at position 1 is outside the pool \[0, 4\)/ })
  t.same([...(await kp.data())], [...ref(k0, kv)], 'the first pool is untouched by the second op')
})

// float64 causal attention of one sequence's queries (positions len-Sq..len-1) over its keys
function refAttention(q: Float32Array, K: number[][], V: number[][], Sq: number, H: number, hd: number, len: number): number[] {
  const out: number[] = []
  for (let s = 0; s < Sq; s++) {
    const pos = len - Sq + s
    for (let h = 0; h < H; h++) {
      const sc: number[] = []
      for (let j = 0; j <= pos; j++) {
        let d = 0
        for (let c = 0; c < hd; c++) d += q[s * H * hd + h * hd + c] * K[j][h * hd + c]
        sc.push(d / Math.sqrt(hd))
      }
      const mx = Math.max(...sc)
      const w = sc.map((x) => Math.exp(x - mx))
      const tot = w.reduce((a, b) => a + b, 0)
      for (let c = 0; c < hd; c++) {
        let acc = 0
        for (let j = 0; j <= pos; j++) acc += (w[j] / tot) * V[j][h * hd + c]
        out.push(acc)
      }
    }
  }
  return out
}

for (const Sq of [1, 3]) {
  t.test(`pagedAttention over shuffled blocks and ragged lengths equals a float64 reference (Sq = ${Sq})`, async (t) => {
    const H = 2, hd = 4, D = H * hd, BS = 4, NB = 17, MB = 4
    const lens = [Sq, 5, 13, 16]
    const B = lens.length
    const r = mulberry32(7 + Sq)
    // a random permutation of the pool's blocks, handed out to the sequences in turn
    const free = Array.from({ length: NB }, (_, i) => i).sort(() => r() - 0.5)
    const table = lens.map(() => Array.from({ length: MB }, () => free.pop()!))
    const kp = randn([NB, BS, D], { seed: 11 }), vp = randn([NB, BS, D], { seed: 12 })
    const q = randn([B, Sq, D], { seed: 13 })
    const out = pagedAttention(q, kp, vp, tensor(Int32Array.from(table.flat()), [B, MB], { dtype: 'int32' }), ints(lens), H)
    const [ov, qv, kv, vv] = await Promise.all([out.data(), q.data(), kp.data(), vp.data()])
    const row = (pool: Float32Array, b: number, j: number) => Array.from(pool.subarray((table[b][Math.floor(j / BS)] * BS + (j % BS)) * D, (table[b][Math.floor(j / BS)] * BS + (j % BS) + 1) * D))
    for (let b = 0; b < B; b++) {
      const K = Array.from({ length: lens[b] }, (_, j) => row(kv, b, j))
      const V = Array.from({ length: lens[b] }, (_, j) => row(vv, b, j))
      const ref = refAttention(qv.subarray(b * Sq * D, (b + 1) * Sq * D), K, V, Sq, H, hd, lens[b])
      // float32 dot products and an online softmax over <= 16 keys: ~1e-6 relative
      t.ok(maxDiff(ov.subarray(b * Sq * D, (b + 1) * Sq * D), ref) < 2e-5, `sequence ${b} (${lens[b]} keys)`)
    }
  })
}

// long rows cross the kernel's 64-key blocks (63, 64, 65, 200, 333 keys) and the head sizes are
// not all multiples of its 8 lanes; each sequence alone gives the same bits as inside the batch.
// the AVX2 kernel sums values for two heads of 32 or one of 64k in 8 registers, else head by
// head; alone a row's heads are split into other groups (of 1 here), so the paths meet
for (const [H, hd] of [[2, 12], [2, 32], [3, 32], [1, 64], [2, 128]]) {
  t.test(`pagedAttention over long ragged rows equals a float64 reference (${H} heads of ${hd})`, async (t) => {
    const D = H * hd, BS = 16, lens = [1, 63, 64, 65, 200, 333], B = lens.length
    const MB = Math.ceil(Math.max(...lens) / BS), NB = B * MB
    const r = mulberry32(hd)
    const free = Array.from({ length: NB }, (_, i) => i).sort(() => r() - 0.5)
    const table = lens.map(() => Array.from({ length: MB }, () => free.pop()!))
    // scores spread over several units, so the running maximum moves between blocks
    const kp = randn([NB, BS, D], { seed: 41, std: 2 }), vp = randn([NB, BS, D], { seed: 42 })
    const q = randn([B, 1, D], { seed: 43 })
    const tt = tensor(Int32Array.from(table.flat()), [B, MB], { dtype: 'int32' })
    const out = pagedAttention(q, kp, vp, tt, ints(lens), H)
    const [ov, qv, kv, vv] = await Promise.all([out.data(), q.data(), kp.data(), vp.data()])
    const row = (pool: Float32Array, b: number, j: number) => {
      const at = (table[b][Math.floor(j / BS)] * BS + (j % BS)) * D
      return Array.from(pool.subarray(at, at + D))
    }
    for (let b = 0; b < B; b++) {
      const K = Array.from({ length: lens[b] }, (_, j) => row(kv, b, j))
      const V = Array.from({ length: lens[b] }, (_, j) => row(vv, b, j))
      const ref = refAttention(qv.subarray(b * D, (b + 1) * D), K, V, 1, H, hd, lens[b])
      t.ok(maxDiff(ov.subarray(b * D, (b + 1) * D), ref) < 2e-5, `sequence ${b} (${lens[b]} keys)`)
      const alone = pagedAttention(q.rows(b, b + 1), kp, vp, tensor(Int32Array.from(table[b]), [1, MB], { dtype: 'int32' }), ints([lens[b]]), H)
      t.same([...(await alone.data())], [...ov.subarray(b * D, (b + 1) * D)], `sequence ${b} alone: the same bits`)
    }
  })
}

t.test('pagedAttention of one sequence matches the contiguous attention op', async (t) => {
  const H = 4, hd = 8, D = H * hd, BS = 16, S = 37, Sq = 5
  const k = randn([1, S, D], { seed: 21 }), v = randn([1, S, D], { seed: 22 }), q = randn([1, Sq, D], { seed: 23 })
  const NB = Math.ceil(S / BS) + 1
  const kp = randn([NB, BS, D], { seed: 24 }), vp = randn([NB, BS, D], { seed: 25 })
  const table = [2, 0, 1, 3].slice(0, NB)
  const slots = Array.from({ length: S }, (_, j) => table[Math.floor(j / BS)] * BS + (j % BS))
  kvWrite(kp, vp, k.reshape([S, D]), v.reshape([S, D]), ints(slots))
  const paged = pagedAttention(q, kp, vp, tensor(Int32Array.from(table), [1, NB], { dtype: 'int32' }), ints([S]), H)
  const { out } = attention(q, k, v, H, { qOffset: S - Sq })
  t.ok(maxDiff(await paged.data(), await out.data()) < 1e-5, 'same values (different summation order)')
})

t.test('pagedAttention checks lengths and block tables on the device', async (t) => {
  const kp = randn([2, 4, 8], { seed: 31 }), vp = randn([2, 4, 8], { seed: 32 }), q = randn([2, 1, 8], { seed: 33 })
  const table = tensor(Int32Array.from([0, 1, 1, 0]), [2, 2], { dtype: 'int32' })
  await t.rejects(pagedAttention(q, kp, vp, table, ints([3, 9]), 2).data(), { code: 'ERR_ARGUMENT', message: /lens: sequence 1 has length 9, expected 1\.\.8/ })
  await t.rejects(pagedAttention(q, kp, vp, table, ints([0, 2]), 2).data(), { code: 'ERR_ARGUMENT', message: /lens: sequence 0 has length 0/ })
  const badTable = tensor(Int32Array.from([0, 5, 1, 0]), [2, 2], { dtype: 'int32' })
  await t.rejects(pagedAttention(q, kp, vp, badTable, ints([6, 2]), 2).data(), { code: 'ERR_ARGUMENT', message: /blockTable: block 5 of sequence 0/ })
  t.equal((await pagedAttention(q, kp, vp, badTable, ints([4, 2]), 2).data()).length, 16, 'an entry past the length is never read')
})

t.test('ropeRows equals rope at each row\'s own offset, bit for bit', async (t) => {
  const x = randn([3, 5, 16], { seed: 41 })
  const starts = [0, 17, 1000]
  const a = x.clone()
  ropeRows(a, 2, ints(starts))
  const av = await a.data()
  for (let b = 0; b < 3; b++) {
    const row = x.rows(b, b + 1).clone()
    rope(row, 2, starts[b])
    t.same([...av.subarray(b * 80, (b + 1) * 80)], [...(await row.data())], `row ${b} at ${starts[b]}`)
  }
})

// the documented rule, written plainly
function refSample(row: number[], temp: number, topK: number, topP: number, u: number): number {
  if (temp === 0) return row.indexOf(Math.max(...row))
  const z = row.map((x) => Math.fround(x) / temp)
  let ids = z.map((_, j) => j).sort((a, b) => z[b] - z[a] || a - b)
  if (topK > 0 && topK < ids.length) ids = ids.slice(0, topK)
  const mx = Math.max(...ids.map((j) => z[j]))
  if (topP < 1) {
    const tot = ids.reduce((s, j) => s + Math.exp(z[j] - mx), 0)
    let run = 0, n = 0
    while (n < ids.length) {
      run += Math.exp(z[ids[n]] - mx)
      n++
      if (run >= topP * tot) break
    }
    ids = ids.slice(0, n)
  }
  ids.sort((a, b) => a - b)
  const tot = ids.reduce((s, j) => s + Math.exp(z[j] - mx), 0)
  const r = u * tot
  let run = 0
  for (const j of ids) {
    run += Math.exp(z[j] - mx)
    if (run > r) return j
  }
  return ids[ids.length - 1]
}

t.test('sample follows the documented rule on fixed logits (ties, top-k, top-p, u at the edges)', async (t) => {
  const r = mulberry32(51)
  const V = 12
  const base = Array.from({ length: V }, () => Math.fround(r() * 4 - 2))
  const tied = [1, 3, 3, 0.5, 3, -1, 2, 2, 0, 0, 3, 1].map(Math.fround)
  const cases: [number[], number, number, number, number][] = []
  for (const row of [base, tied])
    for (const temp of [0, 0.5, 1, 2])
      for (const topK of [0, 1, 3, V])
        for (const topP of [1, 0.9, 0.5, 0.01])
          for (const u of [0, 0.3, 0.999999, r()]) cases.push([row, temp, topK, topP, u])
  const logits = tensor(Float32Array.from(cases.flatMap((c) => c[0])), [cases.length, V])
  const params = tensor(Float32Array.from(cases.flatMap((c) => [c[1], c[2], c[3], c[4]])), [cases.length, 4])
  const { ids, logprobs } = sample(logits, params)
  const [iv, lv, pv] = await Promise.all([ids.data(), logprobs.data(), params.data()])
  let bad = 0
  cases.forEach(([row, , , , ], i) => {
    // the rule is applied to the float32 parameters the op sees
    const want = refSample(row, pv[i * 4], pv[i * 4 + 1], pv[i * 4 + 2], pv[i * 4 + 3])
    if (iv[i] !== want) bad++
    const mx = Math.max(...row)
    const lse = mx + Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0))
    if (Math.abs(lv[i] - (row[iv[i]] - lse)) > 1e-6) bad++
  })
  t.equal(bad, 0, `${cases.length} rows: every id and logprob as the rule says`)
  // greedy ties go to the lowest id
  t.equal(iv[cases.findIndex((c) => c[0] === tied && c[1] === 0)], 1)
})

// a vocabulary large enough for the one-pass top-k selection and the 8-lane exponential sum,
// with many exact ties (a quarter of the logits share 12 values) around the top-k boundary
t.test('sample follows the rule at V = 1003 with ties at the top-k boundary', async (t) => {
  const r = mulberry32(57)
  const V = 1003
  const rows = [0, 1].map(() => Array.from({ length: V }, () => Math.fround(r() < 0.25 ? Math.floor(r() * 12) / 4 : r() * 6 - 3)))
  const cases: [number[], number, number, number, number][] = []
  for (const row of rows)
    for (const temp of [0, 0.7, 1.3])
      for (const topK of [0, 1, 40, V - 1, V])
        for (const topP of [1, 0.9, 0.3])
          for (const u of [0, 0.5, 0.999]) cases.push([row, temp, topK, topP, u])
  const logits = tensor(Float32Array.from(cases.flatMap((c) => c[0])), [cases.length, V])
  const params = tensor(Float32Array.from(cases.flatMap((c) => [c[1], c[2], c[3], c[4]])), [cases.length, 4])
  const { ids, logprobs } = sample(logits, params)
  const [iv, lv, pv] = await Promise.all([ids.data(), logprobs.data(), params.data()])
  let badId = 0, badLp = 0
  cases.forEach(([row], i) => {
    if (iv[i] !== refSample(row, pv[i * 4], pv[i * 4 + 1], pv[i * 4 + 2], pv[i * 4 + 3])) badId++
    const mx = Math.max(...row)
    const lse = mx + Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0))
    if (Math.abs(lv[i] - (row[iv[i]] - lse)) > 1e-6) badLp++
  })
  t.equal(badId, 0, `${cases.length} rows: every id as the rule says`)
  t.equal(badLp, 0, 'every log-probability within 1e-6 of float64')
})

// greedy ids and log-probabilities of rows with NaN and infinite logits, against the plain scan
// (best = 0; take j when x[j] > x[best]) and the formula with the max over the logits that are
// not NaN; 45 ids reach the 32-wide, the 8-wide and the scalar parts of the row's maximum
t.test('sample: greedy ids and log-probabilities of rows with NaN and infinite logits', async (t) => {
  const r = mulberry32(61)
  const V = 45
  const base = () => Array.from({ length: V }, () => Math.fround(r() * 6 - 3))
  const rows: number[][] = []
  const put = (row: number[], at: Record<number, number>) => {
    for (const [j, x] of Object.entries(at)) row[Number(j)] = x
    return row
  }
  rows.push(put(base(), { 0: NaN }))  // a NaN at id 0 is never beaten
  rows.push(put(base(), { 3: NaN, 20: 9 }))  // NaN before the max
  rows.push(put(base(), { 20: 9, 33: NaN }))  // NaN after it
  rows.push(put(base(), { 41: NaN, 44: 9 }))  // in the scalar tail
  rows.push(Array.from({ length: V }, () => -Infinity))
  rows.push(put(base(), { 7: Infinity, 30: Infinity }))
  rows.push(put(base(), { 5: 9, 38: 9 }))  // a tie for the max far apart
  rows.push(put(Array.from({ length: V }, () => NaN), { 40: 1 }))
  const logits = tensor(Float32Array.from(rows.flat()), [rows.length, V])
  // greedy, no top-k, top-p 1, u 0
  const params = tensor(Float32Array.from(rows.flatMap(() => [0, 0, 1, 0])), [rows.length, 4])
  const { ids, logprobs } = sample(logits, params)
  const [iv, lv] = await Promise.all([ids.data(), logprobs.data()])
  rows.forEach((row, i) => {
    let best = 0
    for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j
    t.equal(iv[i], best, `row ${i}: the scan's id`)
    const mx = row.reduce((m, x) => (x > m ? x : m), -Infinity)
    const lp = Math.fround(row[best] - mx - Math.log(row.reduce((s, x) => s + Math.exp(x - mx), 0)))
    if (Number.isNaN(lp)) t.ok(Number.isNaN(lv[i]), `row ${i}: log-probability NaN`)
    else t.ok(Math.abs(lv[i] - lp) <= 1e-6, `row ${i}: log-probability ${lv[i]} (float64 ${lp})`)
  })
})

t.test('sample draws by the weights: frequencies over many u follow the kept softmax', async (t) => {
  const row = [0.5, 2, -1, 1.5, 1.5, 0].map(Math.fround)
  const N = 3000
  const logits = tensor(Float32Array.from(Array.from({ length: N }, () => row).flat()), [N, row.length])
  const params = tensor(Float32Array.from(Array.from({ length: N }, (_, i) => [0.7, 3, 1, (i + 0.5) / N]).flat()), [N, 4])
  const counts = new Array(row.length).fill(0)
  for (const id of await sample(logits, params).ids.data()) counts[id]++
  const kept = [1, 3, 4]
  const w = kept.map((j) => Math.exp(row[j] / 0.7))
  const tot = w.reduce((a, b) => a + b, 0)
  kept.forEach((j, i) => t.ok(Math.abs(counts[j] / N - w[i] / tot) < 2 / N, `id ${j}: ${counts[j]} of ${N}`))
  t.equal(counts[0] + counts[2] + counts[5], 0, 'ids outside the top 3 are never drawn')
})

t.test('sample rejects bad parameters on the device, row by row', async (t) => {
  const logits = randn([2, 5], { seed: 61 })
  for (const [p, what] of [[[-1, 0, 1, 0.5], 'negative temperature'], [[1, 1.5, 1, 0.5], 'fractional topK'], [[1, 0, 0, 0.5], 'topP 0'], [[1, 0, 1, 1], 'u = 1']] as const) {
    const params = tensor(Float32Array.from([0, 0, 1, 0, ...p]), [2, 4])
    const { ids }: { ids: Tensor } = sample(logits, params)
    await t.rejects(ids.data(), { code: 'ERR_ARGUMENT', message: /params: row 1 needs/ }, what)
  }
})

// the portable kernels (attention's row kernel among them) on the same checks, in a child
if (!process.env.VFFN_SERVE_TEST_CHILD) {
  t.test('the portable kernels (VFFN_GEMM_KERNEL=portable) pass the same checks', async (t) => {
    const r = runSelf(__filename, { VFFN_GEMM_KERNEL: 'portable', VFFN_SERVE_TEST_CHILD: '1' })
    if (r.status !== 0) t.comment(`${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`)
    t.equal(r.status, 0, 'child exits 0')
    t.match(r.stdout, /ok \d+ - kernel portable/, 'the child ran the portable kernels')
    t.match(r.stdout, /ok \d+ - pagedAttention over long ragged rows/, 'the child ran the long-row check')
  })
} else {
  t.test('kernel portable', async (t) => {
    t.equal(_native.kernelInfo().gemm, 'portable')
  })
}
