import t from 'tap'
import { tensor, matmul } from '../lib/index'

t.test('matmul 2x2', async (t) => {
  const c = matmul(tensor([[1, 2], [3, 4]]), tensor([[5, 6], [7, 8]]))
  t.same(Array.from(await c.data()), [19, 22, 43, 50])
})
