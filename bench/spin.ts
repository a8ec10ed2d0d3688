// The CPU pool's hand-off between ops, side by side in one process: decode steps with the pool's
// threads sleeping after every op (setSpinWait(0), how it worked before) against polling for 200 µs
// (the default), at batch 1 and 32, the runs alternating so load changes hit both. One-token
// prompts, so every step is a decode step (replayed from its recording).
// Run: npx ts-node --transpile-only bench/spin.ts [small|tiny] [reps] [dense|versatile] [new tokens]
import * as os from 'os'
import { GenerationEngine, TransformerLM, getNumThreads, setSpinWait } from '../lib/index'

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1]

async function main(): Promise<void> {
  const config = (process.argv[2] ?? 'small') as 'small' | 'tiny'
  const reps = Number(process.argv[3] ?? 7)
  const ffn = (process.argv[4] ?? 'dense') as 'dense' | 'versatile'
  const newTokens = Number(process.argv[5] ?? 200)
  const m = new TransformerLM({ ...TransformerLM.config(config), ffn, seed: 1 })
  console.log(`pool hand-off on cpu (${os.cpus()[0]?.model.trim()}, ${getNumThreads()} threads, load ${os.loadavg()[0].toFixed(2)}), ${config} ${ffn}, ${newTokens} new tokens per request, medians of ${reps} alternating runs`)
  console.log('batch  sleep ms/step  poll ms/step  poll/sleep  poll tok/s')
  const initial = setSpinWait()
  for (const B of [1, 32]) {
    const e = new GenerationEngine(m, { maxBatch: B, maxTokens: B * (newTokens + 16) })
    const ms: Record<number, number[]> = { 0: [], 200: [] }
    for (let r = 0; r < reps; r++)
      for (const us of [0, 200]) {
        setSpinWait(us)
        const s0 = e.stats().steps, t0 = performance.now()
        await Promise.all(Array.from({ length: B }, (_, i) => e.generate([i + 7], { maxNewTokens: newTokens }).result))
        ms[us].push((performance.now() - t0) / (e.stats().steps - s0))
      }
    await e.close()
    const s = median(ms[0]), p = median(ms[200])
    console.log(`${String(B).padStart(5)}  ${s.toFixed(3).padStart(13)}  ${p.toFixed(3).padStart(12)}  ${(p / s).toFixed(2).padStart(10)}  ${((B * 1000) / p).toFixed(0).padStart(10)}`)
  }
  setSpinWait(initial)
  m.dispose()
}
main()
