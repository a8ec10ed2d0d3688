// the execution model and the error contract: stable codes, queued errors, the event loop.
import t from 'tap'
import { tensor, empty, randn, matmul, device, cuda, setNumThreads, getNumThreads, VffnError, _native } from '../lib/index'

t.test('every error code, with the argument named', async (t) => {
  const a = randn([3, 4], { seed: 1 })
  const b = randn([5, 2], { seed: 2 })
  t.throws(() => matmul(a, b), { code: 'ERR_SHAPE', message: /b: inner dimensions differ: op\(a\) is \[3, 4\] but op\(b\) is \[5, 2\]/ })
  t.throws(() => matmul(tensor([[1, 2]], undefined, { dtype: 'int32' }), b), { code: 'ERR_DTYPE', message: /a: expected float32 or bfloat16, got int32/ })
  t.throws(() => device('tpu:0'), { code: 'ERR_DEVICE', message: /device: expected 'cpu' or 'cuda:N', got "tpu:0"/ })
  t.throws(() => empty([2], { device: 'gpu' }), { code: 'ERR_DEVICE' })
  if (!cuda.available()) {
    t.throws(() => tensor([1, 2], undefined, { device: 'cuda' }), { code: 'ERR_CUDA_UNAVAILABLE', message: /CUDA is not available: .+/ })
    t.throws(() => device('cuda:0'), { code: 'ERR_CUDA_UNAVAILABLE' })
  } else t.pass('CUDA present: ERR_CUDA_UNAVAILABLE cannot be provoked here')
  const d = tensor([1])
  d.dispose()
  t.throws(() => matmul(d, b), { code: 'ERR_DISPOSED', message: /^a: tensor has been disposed/ })
  // 2^50 float32 elements = 4 PiB: no machine has that
  t.throws(() => empty([2 ** 25, 2 ** 25]), { code: 'ERR_OOM', message: /out of memory/ })
  t.throws(() => a.rows(2, 9), { code: 'ERR_ARGUMENT', message: /slice: expected 0 <= start <= end <= 3/ })
  t.throws(() => matmul(a, a, { transposeB: 'yes' as never }), { code: 'ERR_ARGUMENT', message: /transposeB: expected a boolean/ })
  t.throws(() => setNumThreads(-1), { code: 'ERR_ARGUMENT', message: /threads/ })
  // errors are VffnError instances and carry the code
  try {
    matmul(a, b)
  } catch (e) {
    t.ok(e instanceof VffnError && e instanceof Error)
  }
})

t.test('a bad call changes nothing', async (t) => {
  const a = randn([3, 4], { seed: 5 })
  const out = randn([3, 3], { seed: 6 })
  const before = await out.data()
  t.throws(() => matmul(a, a, { out }), { code: 'ERR_SHAPE' }) // [3,4]x[3,4] mismatch
  t.throws(() => matmul(a, a, { transposeB: true, out: randn([3, 2]) }), { code: 'ERR_SHAPE', message: /out: expected shape \[3, 3\]/ })
  t.same(await out.data(), before)
})

t.test('an error inside queued work belongs to the tensor it wrote; the stream stays usable', async (t) => {
  const cpu = device('cpu')
  const x = randn([8, 8], { seed: 9 })
  const victim = randn([2, 2], { seed: 10 })
  _native._debugFail(victim, 'boom')
  const y = matmul(x, x) // queued after the failure: still runs
  await cpu.sync() // the device itself is fine
  await t.rejects(victim.data(), { code: 'ERR_INTERNAL', message: /op 'debug_fail' failed: boom/ })
  const xv = await x.data()
  const yv = await y.data()
  let ref = 0
  for (let k = 0; k < 8; k++) ref += xv[k] * xv[k * 8]
  t.ok(Math.abs(yv[0] - ref) < 1e-4)
  _native._debugFail(victim, 'again')
  t.same(await y.data(), yv, 'a later failure elsewhere does not reach y')
  await t.rejects(victim.data(), { code: 'ERR_INTERNAL', message: /again/ })
})

t.test('the event loop stays responsive while a large GEMM runs', async (t) => {
  const n = 1536 // ~7 GFLOP: long enough to see timers fire during it on any kernel
  const a = randn([n, n], { seed: 1 })
  const b = randn([n, n], { seed: 2 })
  await device('cpu').sync()
  let ticks = 0
  const timer = setInterval(() => ticks++, 5)
  const t0 = process.hrtime.bigint()
  const c = matmul(a, b) // enqueue only
  const returned = Number(process.hrtime.bigint() - t0) / 1e6
  const ticksAtReturn = ticks
  await c.data()
  const total = Number(process.hrtime.bigint() - t0) / 1e6
  clearInterval(timer)
  t.equal(ticksAtReturn, 0, 'no timer could run before matmul() returned: it did not yield')
  t.ok(returned < total / 4, `matmul() returned after ${returned.toFixed(2)} ms of ${total.toFixed(1)} ms`)
  t.ok(ticks >= 3, `${ticks} timer callbacks ran while the GEMM ran (${total.toFixed(0)} ms)`)
})

t.test('thread count', async (t) => {
  const n = getNumThreads()
  t.ok(n >= 1)
  setNumThreads(1)
  t.equal(getNumThreads(), 1, 'the new count reads back at once')
  const x = randn([64, 64], { seed: 4 })
  const one = await matmul(x, x).data()
  setNumThreads(0)
  const all = await matmul(x, x).data()
  t.same(one, all, 'the same bits at any thread count')
  t.equal(getNumThreads(), n)
})

t.test('CUDA loading path on a machine without a GPU', async (t) => {
  if (cuda.available()) {
    t.ok(cuda.deviceCount() >= 1)
    t.equal(cuda.reason(), '')
    return
  }
  t.equal(cuda.deviceCount(), 0)
  t.match(cuda.reason(), /\S/, 'a reason is given')
  t.throws(() => randn([2], { device: 'cuda:0' }), { code: 'ERR_CUDA_UNAVAILABLE' })
  // still alive and computing
  t.same(Array.from(await tensor([2]).data()), [2])
})

t.test('the addon works in worker threads, each with its own env', async (t) => {
  const { Worker } = await import('worker_threads')
  const path = await import('path')
  const n = 5
  const a = Array.from({ length: n * n }, (_, i) => Math.sin(i))
  const b = Array.from({ length: n * n }, (_, i) => Math.cos(3 * i))
  const ref: number[] = []
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0
      for (let k = 0; k < n; k++) s += a[i * n + k] * b[k * n + j]
      ref.push(s)
    }
  const run = () =>
    new Promise<number[]>((resolve, reject) => {
      const w = new Worker(path.join(__dirname, 'helpers', 'worker-matmul.ts'), { workerData: { a, b, n } })
      w.once('message', (m: number[]) => {
        resolve(m)
        void w.terminate()
      })
      w.once('error', reject)
    })
  const [r1, r2] = await Promise.all([run(), run()])
  for (const r of [r1, r2]) t.ok(r.every((v, i) => Math.abs(v - ref[i]) < 1e-5), 'worker result matches')
  // and the main thread still works afterwards
  t.same(Array.from(await matmul(tensor([[2]]), tensor([[3]])).data()), [6])
})
