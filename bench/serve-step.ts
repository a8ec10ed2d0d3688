// Where a decode step's time goes, op by op against a replayed recorded step, side by side in one
// run: native calls per step, JS-thread time to queue the step (the synchronous part of the
// engine's step, and of that the time inside native entries), wall time per step, at batch 1 and
// 32, with the weight bytes one step must read. Each repetition runs both modes back to back.
// Run: npx ts-node --transpile-only bench/serve-step.ts [small|tiny] [reps] [dense,versatile]
import * as os from 'os'
import { GenerationEngine, TransformerLM, _native, getNumThreads } from '../lib/index'

const calls = new Map<string, { n: number; ms: number }>()
const nat = _native as unknown as Record<string, unknown>
for (const [k, v] of Object.entries(nat)) {
  if (typeof v !== 'function') continue
  const fn = v as (...a: unknown[]) => unknown
  nat[k] = (...a: unknown[]) => {
    const t0 = performance.now()
    try {
      return fn(...a)
    } finally {
      const c = calls.get(k) ?? { n: 0, ms: 0 }
      c.n++
      c.ms += performance.now() - t0
      calls.set(k, c)
    }
  }
}
// the synchronous part of a step: everything the JS thread does before the step's first await
let stepJs = 0
const proto = GenerationEngine.prototype as unknown as { step: () => Promise<void> }
const step = proto.step
proto.step = function (this: unknown) {
  const t0 = performance.now()
  try {
    return step.call(this)
  } finally {
    stepJs += performance.now() - t0
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function measure(m: TransformerLM, B: number, recordSteps: boolean): Promise<number[]> {
  const e = new GenerationEngine(m, { maxBatch: B, maxTokens: B * 80, recordSteps })
  await Promise.all(Array.from({ length: B }, (_, i) => e.generate([i + 1], { maxNewTokens: 4 }).result))
  calls.clear()
  stepJs = 0
  const s0 = e.stats().steps
  const t0 = performance.now()
  // one-token prompts: every step is a decode step of B rows (the first one records)
  await Promise.all(Array.from({ length: B }, (_, i) => e.generate([i + 7], { maxNewTokens: 64 }).result))
  const ms = performance.now() - t0, steps = e.stats().steps - s0
  const n = [...calls.values()].reduce((s, c) => s + c.n, 0), nms = [...calls.values()].reduce((s, c) => s + c.ms, 0)
  await e.close()
  return [ms / steps, stepJs / steps, nms / steps, n / steps]
}

async function main(): Promise<void> {
  const config = (process.argv[2] ?? 'small') as 'small' | 'tiny'
  const reps = Number(process.argv[3] ?? 5)
  console.log(`decode-step profile on cpu (${os.cpus()[0]?.model.trim()}, ${getNumThreads()} threads), config ${config}; medians of ${reps} runs, both modes in each`)
  console.log('model      batch  steps       ms/step  JS ms/step  in native  native calls/step  weight MiB  GB/s of weights  replayed/op-by-op time')
  for (const ffn of (process.argv[4] ?? "dense,versatile").split(",") as ("dense" | "versatile")[]) {
    const m = new TransformerLM({ ...TransformerLM.config(config), ffn, seed: 1 })
    const wbytes = [...m.parameters().values()].reduce((s, p) => s + p.size * 4, 0)
    for (const B of [1, 32]) {
      const rows: Record<'op' | 'rec', number[][]> = { op: [], rec: [] }
      for (let rep = 0; rep < reps; rep++) {
        rows.op.push(await measure(m, B, false))
        rows.rec.push(await measure(m, B, true))
      }
      const med = (mode: 'op' | 'rec', i: number) => median(rows[mode].map((r) => r[i]))
      for (const mode of ['op', 'rec'] as const) {
        const ratio = mode === 'rec' ? (med('rec', 0) / med('op', 0)).toFixed(2) : ''
        console.log(`${ffn.padEnd(10)} ${String(B).padStart(5)}  ${(mode === 'op' ? 'op by op' : 'replayed').padEnd(9)} ${med(mode, 0).toFixed(2).padStart(8)} ${med(mode, 1).toFixed(3).padStart(11)} ${med(mode, 2).toFixed(3).padStart(10)} ${med(mode, 3).toFixed(1).padStart(17)} ${(wbytes / 2 ** 20).toFixed(1).padStart(11)} ${(wbytes / (med(mode, 0) / 1000) / 1e9).toFixed(2).padStart(16)} ${ratio.padStart(23)}`)
      }
    }
    m.dispose()
  }
  const top = [...calls.entries()].sort((a, b) => b[1].n - a[1].n).slice(0, 8)
  console.log('native entry calls of the last run (replayed, batch 32), most frequent first: ' + top.map(([k, c]) => `${k} ${c.n} (${((c.ms * 1000) / c.n).toFixed(1)} µs each)`).join(', '))
}
void main()
