// Overlapped decode steps (EngineOptions.overlapSteps), side by side in one process: the next step
// queued before this one's ids are read back, against waiting for them first, at each batch size,
// the runs alternating so load changes hit both. Three-token prompts, 200 new tokens each, so
// almost every step is a replayed decode step. Prints the medians and each repetition's ratio.
// Run: npx ts-node --transpile-only bench/overlap.ts [batch sizes, e.g. 1,32] [dense|versatile] [reps]
import { GenerationEngine, TransformerLM } from '../lib/index'

async function run(m: TransformerLM, B: number, overlapSteps: boolean): Promise<[number, number]> {
  const e = new GenerationEngine(m, { maxBatch: B, maxTokens: B * 300, overlapSteps })
  await Promise.all(Array.from({ length: B }, (_, i) => e.generate([i + 1], { maxNewTokens: 4 }).result))
  const s0 = e.stats().steps
  const t0 = performance.now()
  await Promise.all(Array.from({ length: B }, (_, i) => e.generate([i + 1, 5, 6], { maxNewTokens: 200 }).result))
  const ms = (performance.now() - t0) / (e.stats().steps - s0)
  const overlapped = e.stats().overlappedSteps
  await e.close()
  return [ms, overlapped]
}

async function main(): Promise<void> {
  const sizes = (process.argv[2] ?? '1,32').split(',').map(Number)
  const ffn = (process.argv[3] ?? 'dense') as 'dense' | 'versatile'
  const reps = Number(process.argv[4] ?? 7)
  const m = new TransformerLM({ ...TransformerLM.config('small'), ffn, seed: 1 })
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]
  console.log(`small ${ffn}, ${reps} alternating runs per batch size`)
  for (const B of sizes) {
    const on: number[] = [], off: number[] = []
    let overlapped = 0
    for (let rep = 0; rep < reps; rep++) {
      off.push((await run(m, B, false))[0])
      const [ms, n] = await run(m, B, true)
      on.push(ms)
      overlapped = n
    }
    console.log(`batch ${B}: waiting ${med(off).toFixed(3)} ms/step, overlapped ${med(on).toFixed(3)} ms/step (${overlapped} steps overlapped in the last run), ratio ${(med(on) / med(off)).toFixed(2)}; per run ${on.map((x, i) => (x / off[i]).toFixed(2)).join(' ')}`)
  }
  m.dispose()
}
void main()
