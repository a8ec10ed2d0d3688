// run in a fresh process by test/train-checkpoint.ts: load a training checkpoint, take the
// remaining steps from the data position it stored, and save the result for comparison
import { loadCheckpoint, saveCheckpoint } from '../../lib/index'
import { setup, steps } from './resume-run'

async function main(): Promise<void> {
  const [from, to, end] = process.argv.slice(2)
  const { model, opt } = setup()
  const info = await loadCheckpoint(from, { model, optimizer: opt })
  const position = (info.extra as { position: number }).position
  const losses = await steps(model, opt, position, Number(end))
  await saveCheckpoint(to, { model, optimizer: opt, schedule: info.schedule, extra: { position: Number(end), losses } })
  console.log(JSON.stringify({ step: info.step, position, schedule: info.schedule }))
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
