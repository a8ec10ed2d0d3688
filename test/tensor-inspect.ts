// console.log(tensor) shows what is known without waiting: dtype, shape, device, and whether the
// tensor was disposed; never the internals (storage handle, strides).
import t from 'tap'
import { inspect } from 'node:util'
import { randn, tensor } from '../lib/index'

t.test('util.inspect shows dtype, shape and device, and "disposed"', async (t) => {
  const x = randn([2, 3], { seed: 1 })
  t.equal(inspect(x), 'Tensor(float32 [2, 3] cpu)')
  t.equal(inspect({ w: x }), '{ w: Tensor(float32 [2, 3] cpu) }', 'inside other values too')
  const ids = tensor(new Int32Array([4, 5, 6, 7]), [1, 4])
  t.equal(inspect(ids), 'Tensor(int32 [1, 4] cpu)')
  const b = x.astype('bfloat16'), bt = b.T
  t.equal(inspect(bt), 'Tensor(bfloat16 [3, 2] cpu)')
  b.dispose()
  bt.dispose()
  t.notMatch(inspect(x), /_id|_h|strides|Storage/, 'no internals')
  x.dispose()
  t.equal(inspect(x), 'Tensor(float32 [2, 3] cpu, disposed)')
  ids.dispose()
})
