// runs in a worker thread that the parent terminates (or that exits by itself) while its waits
// are pending: reads of a large matmul, syncs, many small queued ops. plain JS over the compiled
// package (dist/), so forty workers start in seconds.
const { parentPort, workerData } = require('worker_threads')
const { device, matmul, randn, _native } = require('../../dist/index.js')

const { mode } = workerData
const a = randn([384, 384], { seed: 1 })
if (mode === 'small') {
  const x = randn([4, 4], { seed: 2 })
  for (let i = 0; i < 2000; i++) void matmul(x, x).data()
} else {
  for (let i = 0; i < 4; i++) void matmul(a, a).data()
  if (mode === 'sync') void device('cpu').sync()
}
_native._debugSleep(0, 0, 2)
void matmul(a, a).data()
parentPort.postMessage('queued')
if (mode === 'exit') process.exit(0)
