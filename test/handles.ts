// the native handle table (native/napi/storage.h): a Tensor holds an id naming one slot; ops look
// ids up; a stale id finds nothing; dispose() and garbage collection release slots; native errors
// are VffnError instances without a JS wrapper in between
import t from 'tap'
import { _native, device, randn, tensor, zeros, VffnError } from '../lib/index'

async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    ;(globalThis as { gc?: () => void }).gc?.()
    await new Promise((r) => setImmediate(r))
  }
}

t.test('ops take a handle id or a Tensor object, with the same result', async (t) => {
  const a = tensor([1, 2, 3, 4], [2, 2]), b = tensor([5, 6, 7, 8], [2, 2])
  const c1 = zeros([2, 2]), c2 = zeros([2, 2])
  _native.gemm(c1._id, a._id, b._id, false, false, 1, 0)
  _native.gemm(c2, a, b, false, false, 1, 0)
  // [[1,2],[3,4]] @ [[5,6],[7,8]]
  t.same(Array.from(await c1.data()), [19, 22, 43, 50])
  t.same(Array.from(await c2.data()), [19, 22, 43, 50])
  for (const x of [a, b, c1, c2]) x.dispose()
})

t.test('a disposed tensor\'s id finds nothing, also once its slot is reused', async (t) => {
  const x = randn([4], { seed: 1 })
  const id = x._id
  x.dispose()
  t.throws(() => _native.fill(id, 1), { code: 'ERR_DISPOSED', message: /tensor: tensor has been disposed/ })
  t.equal(_native.release(id), false, 'releasing it again is a no-op')
  // the freed slot is the next one handed out: a new id, and the old one stays dead
  const y = randn([4], { seed: 2 })
  t.not(y._id, id)
  t.throws(() => _native.fill(id, 1), { code: 'ERR_DISPOSED' })
  _native.fill(y._id, 3)
  t.same(Array.from(await y.data()), [3, 3, 3, 3])
  y.dispose()
})

t.test('what is not an id is an argument error naming the argument', async (t) => {
  for (const bad of [5, -1, 1.5, 2 ** 60, NaN, 'x', {}, { _id: 'x' }, [], null])
    t.throws(() => _native.fill(bad as never, 1), { code: 'ERR_ARGUMENT', message: /^tensor: expected a Tensor/ }, String(bad))
  t.throws(() => _native.copy(7 as never, 7 as never), { code: 'ERR_ARGUMENT', message: /^dst: expected a Tensor/ })
})

t.test('native errors are VffnError instances, thrown and rejected', async (t) => {
  const a = zeros([2, 3]), b = zeros([2, 3]), c = zeros([2, 2])
  let thrown: unknown
  try {
    _native.gemm(c._id, a._id, b._id, false, false, 1, 0)
  } catch (e) {
    thrown = e
  }
  t.ok(thrown instanceof VffnError, 'thrown')
  t.equal((thrown as VffnError).code, 'ERR_SHAPE')
  t.equal((thrown as VffnError).name, 'VffnError')
  const f = zeros([2])
  _native._debugFail(f._id, 'boom')
  const rejected = await f.data().then(() => null, (e: unknown) => e)
  t.ok(rejected instanceof VffnError, 'rejected')
  t.match((rejected as VffnError).message, /boom/)
  for (const x of [a, b, c, f]) x.dispose()
})

t.test('empty() and view() check what they are given', async (t) => {
  t.throws(() => _native.empty(0, 0, 0, [-1]), { code: 'ERR_ARGUMENT', message: /shape/ })
  t.throws(() => _native.empty(0, 0, 0, [1, 1, 1, 1, 1, 1, 1]), { code: 'ERR_SHAPE' })
  t.throws(() => _native.empty(0, 0, 0, [2 ** 26, 2 ** 26]), { code: 'ERR_SHAPE', message: /2\^50/ })
  t.throws(() => _native.empty(0, 0, 9, [1]), { code: 'ERR_ARGUMENT', message: /dtype/ })
  t.throws(() => _native.empty(0, 0, 0, 3 as never), { code: 'ERR_ARGUMENT', message: /shape/ })
  const x = zeros([4])
  t.throws(() => _native.view(x._id, 0, 0, [5], [1]), { code: 'ERR_ARGUMENT', message: /outside its storage/ })
  t.throws(() => _native.view(x._id, 0, 2, [2], [2]), { code: 'ERR_ARGUMENT', message: /outside its storage/ })
  const v = _native.view(x._id, 0, 1, [3], [1])
  _native.fill(v, 2)
  t.same(Array.from(await x.data()), [0, 2, 2, 2], 'a view writes into its source')
  t.ok(_native.release(v))
  x.dispose()
})

t.test('slots come back: dispose, views, and tensors collected without dispose', async (t) => {
  const cpu = device('cpu')
  await collect()
  await cpu.sync()
  const handles = _native.liveHandles(), live = cpu.memory().live
  for (let i = 0; i < 2000; i++) {
    const x = randn([8, 8], { seed: i })
    const c = x.cols(1, 3)
    const v = c.T
    v.dispose()
    c.dispose()
    x.dispose()
  }
  t.equal(_native.liveHandles(), handles, 'disposed tensors and views give their slots back')
  ;(() => {
    for (let i = 0; i < 500; i++) randn([16], { seed: i }).rows(2, 9)
  })()
  t.ok(_native.liveHandles() >= handles + 500, 'undisposed tensors hold their slots until collected')
  await collect()
  await cpu.sync()
  t.equal(_native.liveHandles(), handles, 'collected tensors give their slots back')
  t.equal(cpu.memory().live, live, 'and their memory')
})
