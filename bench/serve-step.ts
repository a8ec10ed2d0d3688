// Where a decode step's time goes: native calls per step, JS-thread time spent queuing the step
// (inside native entry calls and in total), and wall time per step, at batch 1 and 32, with the
// weight bytes one step must read. Run: npx ts-node --transpile-only bench/serve-step.ts [small|tiny]
import * as os from 'os'
import { GenerationEngine, TransformerLM, _native, getNumThreads } from '../lib/index'
import * as step from '../lib/serve/step'

const calls = new Map<string, { n: number; ms: number }>()
const nat = _native as unknown as Record<string, unknown>
for (const [k, v] of Object.entries(nat)) {
  if (typeof v !== 'function' || k === 'Storage') continue
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
let stepJs = 0
const run = step.runStep
;(step as { runStep: typeof run }).runStep = (...a: Parameters<typeof run>) => {
  const t0 = performance.now()
  try {
    return run(...a)
  } finally {
    stepJs += performance.now() - t0
  }
}

async function main(): Promise<void> {
  const config = (process.argv[2] ?? 'small') as 'small' | 'tiny'
  console.log(`decode-step profile on cpu (${os.cpus()[0]?.model.trim()}, ${getNumThreads()} threads), config ${config}; medians of 3 runs`)
  console.log('model      batch  ms/step  JS ms/step  in native  native calls/step  weight MiB  GB/s of weights')
  for (const ffn of ['dense', 'versatile'] as const) {
    const m = new TransformerLM({ ...TransformerLM.config(config), ffn, seed: 1 })
    const wbytes = [...m.parameters().values()].reduce((s, p) => s + p.size * 4, 0)
    for (const B of [1, 32]) {
      const rows: number[][] = []
      for (let rep = 0; rep < 3; rep++) {
        const e = new GenerationEngine(m, { maxBatch: B, maxTokens: B * 80 })
        await Promise.all(Array.from({ length: B }, (_, i) => e.generate([i + 1], { maxNewTokens: 4 }).result))
        calls.clear()
        stepJs = 0
        const s0 = e.stats().steps
        const t0 = performance.now()
        // one-token prompts: every step after the first is a decode step of B rows
        await Promise.all(Array.from({ length: B }, (_, i) => e.generate([i + 7], { maxNewTokens: 64 }).result))
        const ms = performance.now() - t0, steps = e.stats().steps - s0
        const n = [...calls.values()].reduce((s, c) => s + c.n, 0), nms = [...calls.values()].reduce((s, c) => s + c.ms, 0)
        rows.push([ms / steps, stepJs / steps, nms / steps, n / steps])
        await e.close()
      }
      const med = (i: number) => rows.map((r) => r[i]).sort((a, b) => a - b)[1]
      console.log(`${ffn.padEnd(10)} ${String(B).padStart(5)} ${med(0).toFixed(2).padStart(8)} ${med(1).toFixed(3).padStart(11)} ${med(2).toFixed(3).padStart(10)} ${med(3).toFixed(0).padStart(17)} ${(wbytes / 2 ** 20).toFixed(1).padStart(11)} ${(wbytes / (med(0) / 1000) / 1e9).toFixed(2).padStart(16)}`)
    }
    m.dispose()
  }
  const top = [...calls.entries()].sort((a, b) => b[1].n - a[1].n).slice(0, 8)
  console.log('native entry calls of the last run, most frequent first: ' + top.map(([k, c]) => `${k} ${c.n}`).join(', '))
}
void main()
