// The CPU sample op on one [32, 4096] batch of logits (a batch-32 decode step at small's
// vocabulary), greedy and at temperature 1, on 1 and 2 threads: µs per call, median of 7 runs of
// 100 replays.
// Run: npx ts-node --transpile-only bench/sample.ts [B] [V]
import { _native, sample, tensor, setNumThreads, getNumThreads } from '../lib/index'
import { mulberry32 } from '../lib/random'

async function main(): Promise<void> {
  const B = Number(process.argv[2] ?? 32), V = Number(process.argv[3] ?? 4096)
  const r = mulberry32(3)
  const logits = tensor(Float32Array.from({ length: B * V }, () => r() * 10 - 5), [B, V])
  const before = getNumThreads()
  for (const temp of [0, 1])
    for (const th of [1, 2]) {
      setNumThreads(th)
      const params = tensor(Float32Array.from({ length: B * 4 }, (_, i) => [temp, 0, 1, 0.5][i % 4]), [B, 4])
      let out: ReturnType<typeof sample> | undefined
      const g = _native.graphRecord(() => {
        out = sample(logits, params)
      })
      const ts: number[] = []
      for (let rep = 0; rep < 7; rep++) {
        const t0 = performance.now()
        for (let i = 0; i < 100; i++) _native.graphReplay(g)
        await _native.sync(0, 0)
        ts.push((performance.now() - t0) / 100)
      }
      ts.sort((a, b) => a - b)
      console.log(`temperature ${temp}, ${th} thread${th > 1 ? 's' : ''}: ${(ts[3] * 1000).toFixed(1)} µs per [${B}, ${V}] sample`)
      _native.graphRelease(g)
      for (const t of [params, out?.ids, out?.logprobs]) t?.dispose()
    }
  setNumThreads(before)
}
void main()
