// the CPU pool's spin-then-sleep hand-off (native/cpu/pool.cpp): the setting round-trips and is
// read from VFFN_SPIN_US; results are the same bits whether the threads poll or sleep between
// ops; and thousands of small parallel ops at settings that make the poll end just as work
// arrives (0, 1 and 3 µs) all complete, on 2 and 3 threads, with an error inside an op still
// failing only that op.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { attention, embedding, getNumThreads, matmul, randn, setNumThreads, setSpinWait, Tensor, tensor, VffnError } from '../lib/index'

const before = setSpinWait(), threadsBefore = getNumThreads()
t.teardown(() => {
  setSpinWait(before)
  setNumThreads(threadsBefore)
})

t.test('setSpinWait returns the value in force, and VFFN_SPIN_US sets the starting value', async (t) => {
  t.equal(setSpinWait(), 200, 'default 200 µs (this process has no VFFN_SPIN_US)')
  t.equal(setSpinWait(37), 37)
  t.equal(setSpinWait(), 37, 'no argument only reads')
  t.equal(setSpinWait(0), 0)
  const r = spawnSync(process.execPath, ['-e', "console.log(require('./dist/index.js').setSpinWait())"], {
    env: { ...process.env, VFFN_SPIN_US: '55' }, encoding: 'utf8', cwd: `${__dirname}/..`,
  })
  t.equal(r.stdout.trim(), '55', 'VFFN_SPIN_US=55 in a child')
  t.throws(() => setSpinWait(-1), { code: 'ERR_ARGUMENT', message: /microseconds/ })
  t.equal(setSpinWait(), 0, 'a refused value changes nothing')
})

async function work(): Promise<Float32Array[]> {
  // big enough that the GEMMs and the attention split across the pool's threads
  const a = randn([96, 160], { seed: 3 }), b = randn([160, 192], { seed: 4 }), c = randn([192, 160], { seed: 5 })
  const outs: Tensor[] = []
  for (let i = 0; i < 4; i++) {
    const x = matmul(matmul(a, b), c)
    const q = matmul(x, b).reshape([1, 96, 192])
    outs.push(attention(q, q, q, 4).out)
  }
  return Promise.all(outs.map((o) => o.data()))
}

t.test('the same bits whether the pool polls or sleeps', async (t) => {
  for (const threads of [2, 3]) {
    setNumThreads(threads)
    setSpinWait(0)
    const sleeping = await work()
    setSpinWait(200)
    const polling = await work()
    t.same(polling.map((x) => [...x]), sleeping.map((x) => [...x]), `${threads} threads`)
  }
})

t.test('many small parallel ops complete at every spin setting, and a failing op fails alone', async (t) => {
  const a = randn([64, 128], { seed: 5 }), b = randn([128, 128], { seed: 6 })
  const want = [...(await matmul(a, b).data())]
  for (const threads of [2, 3])
    for (const us of [0, 1, 3, 200]) {
      setNumThreads(threads)
      setSpinWait(us)
      let last: Tensor = a
      for (let i = 0; i < 400; i++) {
        last = matmul(a, b)
        if (i % 100 === 0) await new Promise((r) => setTimeout(r, 1))  // let the threads go to sleep
      }
      t.same([...(await last.data())], want, `${threads} threads, ${us} µs`)
    }
  // an op that fails on the device (an index outside the table) rejects only its own tensor
  const table = randn([4, 8], { seed: 7 })
  await t.rejects(embedding(table, tensor(Int32Array.from([1, 9]), [2], { dtype: 'int32' })).data(), VffnError)
  t.same([...(await matmul(a, b).data())], want, 'the next op is unaffected')
})
