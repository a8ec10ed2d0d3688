// runs in a worker thread: an op that fails there reports to this thread's own wait only
import { parentPort } from 'worker_threads'
import { embedding, randn, tensor } from '../../lib/index'

const bad = embedding(randn([4, 4]), tensor(Int32Array.from([9]), [1], { dtype: 'int32' }))
bad.data().then(
  () => parentPort?.postMessage('resolved'),
  (e: { code?: string }) => parentPort?.postMessage(e.code ?? 'no code'),
)
