// run as a child process by test/teardown.ts: workers end at many moments while their waits are
// pending; this process must survive every one and keep computing right. prints a summary line.
import { Worker } from 'worker_threads'
import * as path from 'path'
import { matmul, tensor } from '../../lib/index'

const modes = ['read', 'sync', 'small', 'exit'] as const
const delays = (process.env.VFFN_TEARDOWN_DELAYS ?? '0,1,2,3,5,8,13,21,34,50').split(',').map(Number)

async function once(mode: (typeof modes)[number], delay: number): Promise<void> {
  const w = new Worker(path.join(__dirname, 'teardown-worker.js'), { workerData: { mode } })
  const ended = new Promise<void>((resolve) => w.once('exit', () => resolve()))
  w.on('error', () => undefined)
  await new Promise<void>((resolve) => w.once('message', () => resolve()))
  if (mode !== 'exit') {
    await new Promise((r) => setTimeout(r, delay))
    await w.terminate()
  }
  await ended
}

async function main(): Promise<void> {
  let runs = 0
  for (const delay of delays)
    for (const mode of modes) {
      await once(mode, delay)
      runs++
      // the main thread's own work is unaffected
      const r = await matmul(tensor([[1, 2], [3, 4]]), tensor([[5, 6], [7, 8]])).data()
      if (r.join() !== '19,22,43,50') throw new Error(`wrong result after ${mode} at ${delay} ms: ${r.join()}`)
    }
  console.log(`teardown: ${runs} workers ended with waits pending; main thread fine`)
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
