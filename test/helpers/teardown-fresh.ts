// run as a child process by test/teardown.ts: this thread never loads the addon; only workers do,
// and each is terminated with work queued. Node closes an addon when the env that loaded it ends,
// so the library must stay mapped for the process-wide device workers still running its code.
import { Worker } from 'worker_threads'
import * as path from 'path'

async function main(): Promise<void> {
  for (let i = 0; i < 12; i++) {
    const w = new Worker(path.join(__dirname, 'teardown-worker.js'), { workerData: { mode: 'read' } })
    w.on('error', () => undefined)
    const ended = new Promise<void>((resolve) => w.once('exit', () => resolve()))
    await new Promise<void>((resolve) => w.once('message', () => resolve()))
    await w.terminate()
    await ended
  }
  await new Promise((r) => setTimeout(r, 300)) // queued work finishes after the last worker ended
  console.log('teardown-fresh: 12 workers ended; the process is fine')
}
void main()
