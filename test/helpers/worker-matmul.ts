// runs in a worker thread: the addon loaded a second time in another env must work there too
import { parentPort, workerData } from 'worker_threads'
import { tensor, matmul } from '../../lib/index'

const { a, b, n } = workerData as { a: number[]; b: number[]; n: number }
matmul(tensor(Float32Array.from(a), [n, n]), tensor(Float32Array.from(b), [n, n]))
  .data()
  .then((d) => parentPort?.postMessage(Array.from(d)))
