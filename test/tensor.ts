// tensors: creation, round trips, views, dtype conversion, randn, disposal and memory.
import t from 'tap'
import { tensor, empty, zeros, full, randn, device, Tensor, VffnError, _native } from '../lib/index'

// float32 -> bfloat16 -> float32 by the rule (round to nearest, ties to even), written plainly
function bf16Round(x: number): number {
  const f = new Float32Array([x])
  const u = new Uint32Array(f.buffer)
  const bits = u[0]
  if ((bits & 0x7fffffff) > 0x7f800000) return NaN
  const lower = bits & 0xffff
  let upper = bits >>> 16
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper = (upper + 1) >>> 0
  u[0] = (upper << 16) >>> 0
  return f[0]
}

t.test('creation and round trips', async (t) => {
  const a = tensor(new Float32Array([1.5, -2.25, 3, 4e-3, 5e6, -6]), [2, 3])
  t.same(a.shape, [2, 3])
  t.equal(a.dtype, 'float32')
  t.equal(a.device.toString(), 'cpu')
  t.same(Array.from(await a.data()), [1.5, -2.25, 3, 4e-3, 5e6, -6].map(Math.fround))
  const n = tensor([[1, 2, 3], [4, 5, 6]])
  t.same(n.shape, [2, 3])
  t.same(Array.from(await n.data()), [1, 2, 3, 4, 5, 6])
  const i = tensor(new Int32Array([7, -8, 2147483647]), [3])
  t.equal(i.dtype, 'int32')
  t.same(Array.from(await i.intData()), [7, -8, 2147483647])
  const i2 = tensor([[1, 2], [3, 4]], undefined, { dtype: 'int32' })
  t.same(Array.from(await i2.intData()), [1, 2, 3, 4])
  const z = zeros([3, 2])
  t.same(Array.from(await z.data()), [0, 0, 0, 0, 0, 0])
  const f = full([2], 2.5, { dtype: 'bfloat16' })
  t.same(Array.from(await f.data()), [2.5, 2.5])
  const e = empty([0, 4])
  t.equal(e.size, 0)
  t.same(Array.from(await e.data()), [])
  // the source array may change right after creation: the tensor keeps the values it was given
  const src = new Float32Array([1, 2, 3])
  const c = tensor(src)
  src.fill(9)
  t.same(Array.from(await c.data()), [1, 2, 3])
})

t.test('bfloat16 rounds to nearest even', async (t) => {
  const vals = [
    1 + 2 ** -8, // exactly halfway between 1 and 1 + 2^-7: ties to even -> 1
    1 + 3 * 2 ** -8, // halfway, odd lower neighbour -> rounds up to 1 + 2^-6
    1 + 2 ** -8 + 2 ** -20, // just above halfway -> up
    -(1 + 2 ** -8),
    3.14159265,
    -2.7182818,
    65504.5,
    1e-30,
    3.4e38, // rounds to infinity? no: stays finite below bf16 max after rounding check
    Infinity,
    -Infinity,
  ]
  const x = tensor(Float32Array.from(vals))
  const b = x.astype('bfloat16')
  t.equal(b.dtype, 'bfloat16')
  const got = Array.from(await b.data())
  t.same(got, vals.map(bf16Round))
  t.equal(got[0], 1)
  t.equal(got[1], 1 + 2 ** -6)
  const nan = tensor(new Float32Array([NaN])).astype('bfloat16')
  t.ok(Number.isNaN((await nan.data())[0]), 'NaN stays NaN')
  const raw = await b.rawData()
  t.equal(raw[0], 0x3f80, 'raw bits of 1.0')
  // from nested arrays straight to bfloat16, and back to float32 unchanged
  const direct = tensor([[1 + 2 ** -8, 3.14159265]], undefined, { dtype: 'bfloat16' })
  t.same(Array.from(await direct.astype('float32').data()), [1, bf16Round(3.14159265)])
})

t.test('views share memory without copying', async (t) => {
  const vals = Float32Array.from({ length: 20 }, (_, i) => i * 1.5 - 7)
  const a = tensor(vals, [4, 5])
  const r = a.rows(1, 3)
  t.same(r.shape, [2, 5])
  t.equal(r.offset, 5)
  t.same(Array.from(await r.data()), Array.from(vals.slice(5, 15)))
  const c = a.cols(2, 4)
  t.same(c.shape, [4, 2])
  t.same(c.strides, [5, 1])
  t.notOk(c.isContiguous)
  t.same(Array.from(await c.data()), [0, 1, 2, 3].flatMap((i) => [vals[i * 5 + 2], vals[i * 5 + 3]]))
  const tr = a.T
  t.same(tr.shape, [5, 4])
  t.same(Array.from(await tr.data()), [0, 1, 2, 3, 4].flatMap((j) => [0, 1, 2, 3].map((i) => vals[i * 5 + j])))
  const re = a.reshape([2, -1])
  t.same(re.shape, [2, 10])
  t.same(Array.from(await re.data()), Array.from(vals))
  // a reshape of a strided view copies
  const rc = c.reshape([8])
  t.same(Array.from(await rc.data()), Array.from(await c.data()))
  // writing through a view changes the base
  c.copy_(tensor(new Float32Array([10, 11, 12, 13, 14, 15, 16, 17]), [4, 2]))
  const after = await a.data()
  t.same([after[2], after[3], after[7], after[8], after[17], after[18]], [10, 11, 12, 13, 16, 17])
  t.equal(after[0], vals[0])
  // contiguous() of a strided view is a copy with the same values
  const cc = c.contiguous()
  t.ok(cc.isContiguous)
  t.same(Array.from(await cc.data()), [10, 11, 12, 13, 14, 15, 16, 17])
  // a view keeps the memory alive after its base is disposed
  a.dispose()
  t.same(Array.from(await r.data()).slice(0, 2), [vals[5], vals[6]])
  t.throws(() => a.rows(0, 1), { code: 'ERR_DISPOSED' })
  t.throws(() => r.slice(0, 0, 3), { code: 'ERR_ARGUMENT' })
  t.throws(() => r.reshape([3, 3]), { code: 'ERR_SHAPE' })
})

t.test('fill and converting copies on strided views touch exactly their elements', async (t) => {
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const base = randn([5, 7], { seed: 11, dtype })
    const before = await base.data()
    base.cols(2, 5).rows(1, 4).fill_(-3.5)
    const after = await base.data()
    for (let i = 0; i < 5; i++)
      for (let j = 0; j < 7; j++) {
        const inside = i >= 1 && i < 4 && j >= 2 && j < 5
        t.equal(after[i * 7 + j], inside ? -3.5 : before[i * 7 + j], `${dtype} [${i},${j}]`)
      }
  }
  // a transposed float32 view converted into a strided bfloat16 view
  const src = randn([3, 4], { seed: 12 })
  const sv = await src.data()
  const dst = zeros([4, 6], { dtype: 'bfloat16' }).fill_(7)
  dst.cols(1, 4).copy_(src.T)
  const dv = await dst.data()
  for (let i = 0; i < 4; i++)
    for (let j = 0; j < 6; j++) t.equal(dv[i * 6 + j], j >= 1 && j < 4 ? bf16Round(sv[(j - 1) * 4 + i]) : 7)
  const ints = tensor(new Int32Array([1, 2, 3, 4, 5, 6]), [2, 3])
  ints.cols(1, 2).fill_(-9)
  t.same(Array.from(await ints.intData()), [1, -9, 3, 4, -9, 6])
})

t.test('randn: seeded, device independent statistics, truncation', async (t) => {
  const a = await randn([4097], { seed: 12345 }).data()
  const b = await randn([4097], { seed: 12345 }).data()
  const c = await randn([4097], { seed: 12346 }).data()
  t.same(a, b, 'same seed, same values')
  t.not(a[0], c[0])
  const mean = a.reduce((s, v) => s + v, 0) / a.length
  const sd = Math.sqrt(a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length)
  // 4097 samples: standard error of the mean ~0.016, of the std ~0.011
  t.ok(Math.abs(mean) < 0.08, `mean ${mean}`)
  t.ok(Math.abs(sd - 1) < 0.06, `std ${sd}`)
  const tr = await randn([20000], { seed: 7n, std: 0.02, truncate: 3 }).data()
  t.ok(tr.every((v) => Math.abs(v) <= 0.06 + 1e-9), 'all within 3 sigma')
  const big = BigInt('0xfedcba9876543210')
  t.same(await randn([5], { seed: big }).data(), await randn([5], { seed: big }).data())
  t.throws(() => randn([2], { seed: -1 }), { code: 'ERR_ARGUMENT' })
  t.throws(() => randn([2], { std: -1 }), { code: 'ERR_ARGUMENT' })
  // prefix property: element i does not depend on the tensor's size
  const short = await randn([7], { seed: 12345 }).data()
  t.same(Array.from(short), Array.from(a.slice(0, 7)))
})

t.test('Philox4x32-10 known answers', async (t) => {
  // published known-answer vectors of Philox4x32 with 10 rounds: counter words, key words, output
  const kat: [number[], number[], number[]][] = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ]
  for (const [ctr, key, out] of kat) t.same(_native.philox(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1]), out)
})

t.test('disposal', async (t) => {
  const a = tensor([1, 2, 3])
  t.notOk(a.disposed)
  a.dispose()
  t.ok(a.disposed)
  t.throws(() => a.data(), { code: 'ERR_DISPOSED', message: /tensor: tensor has been disposed/ })
  t.throws(() => a.to('cpu'), { code: 'ERR_DISPOSED' })
  t.throws(() => tensor([1, 2, 3]).copy_(a), { code: 'ERR_DISPOSED', message: /src/ })
  a.dispose() // a second dispose is harmless
})

// tensors of earlier tests that were never disposed are freed whenever the collector runs, so
// collect first to get a stable baseline (the suite runs node with --expose-gc)
// (native finalizers run after the collection, so give them a turn of the event loop)
async function collect(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    ;(globalThis as { gc?: () => void }).gc?.()
    await new Promise((r) => setImmediate(r))
  }
}

t.test('no memory growth across 1000 create/dispose cycles', async (t) => {
  const cpu = device('cpu')
  await collect()
  await cpu.sync()
  const before = cpu.memory().live
  for (let i = 0; i < 1000; i++) {
    const x = randn([64, 33], { seed: i })
    const v = x.cols(1, 7)
    const y = v.contiguous()
    x.dispose()
    v.dispose()
    y.dispose()
  }
  await collect()
  await cpu.sync()
  t.equal(cpu.memory().live, before)
  const held = randn([1000])
  t.equal(cpu.memory().live, before + 4000, 'memory() counts a live tensor')
  held.dispose()
  await collect()
  await cpu.sync()
  t.equal(cpu.memory().live, before)
})

t.test('memory freed only after queued work that reads it has run', async (t) => {
  const x = randn([256, 256], { seed: 3 })
  const expected = await x.data()
  const y = x.clone() // queued
  x.dispose() // JS handle gone before the copy is known to have run
  t.same(await y.data(), expected)
})

t.test('Tensor is exported as a class', async (t) => {
  t.ok(tensor([1]) instanceof Tensor)
  t.throws(() => tensor([[1, 2], [3]]), { code: 'ERR_SHAPE' })
  t.throws(() => tensor(new Float32Array(3), [2, 2]), { code: 'ERR_SHAPE' })
  t.throws(() => tensor([1.5], undefined, { dtype: 'int32' }), { code: 'ERR_ARGUMENT' })
  t.throws(() => tensor([1], undefined, { dtype: 'float16' as never }), { code: 'ERR_DTYPE' })
  const err = (() => {
    try {
      tensor([1], undefined, { dtype: 'float16' as never })
    } catch (e) {
      return e
    }
  })()
  t.ok(err instanceof VffnError)
})
