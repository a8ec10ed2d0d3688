// What `versatile-ffn train` adds to a training step: the statistics it keeps (stats: true), the
// loop counts and gradient norm it reads back, and the JSON line it appends, against a bare
// trainStep loop that reads only the loss. Rounds alternate, in one process; medians.
//   npx ts-node --transpile-only bench/train-cli.ts [--config tiny|small] [--batch 8] [--seq 64] [--rounds 7] [--steps 10]
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { AdamW, TransformerLM, tensor, trainStep } from '../lib/index'

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? process.argv[i + 1] : dflt
}

async function main(): Promise<void> {
  const config = arg('config', 'tiny') as 'tiny' | 'small'
  const B = Number(arg('batch', '8')), S = Number(arg('seq', '64')), rounds = Number(arg('rounds', '7')), steps = Number(arg('steps', '10'))
  const model = new TransformerLM(TransformerLM.config(config, { seed: 1 }))
  const opt = new AdamW(model.parameters(), model.gradients(), { lr: 1e-3 })
  const V = model.config.vocabSize
  const ids = Int32Array.from({ length: B * S }, (_, i) => (i * 7) % V)
  const targets = Int32Array.from({ length: B * S }, (_, i) => (i * 5 + 1) % V)
  const x = tensor(ids, [B, S], { dtype: 'int32' })
  const logFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-bench-train-')), 'log.jsonl')
  const fd = fs.openSync(logFile, 'a')
  const step = async (cli: boolean) => {
    const r = trainStep(model, opt, x, targets, { stats: cli })
    const st = await r.status
    if (!st.ok) throw st.error
    const loss = (await r.loss.data())[0]
    if (cli) {
      const gn = (await r.gradNorm.data())[0]
      let sum = 0, n = 0
      for (const micro of r.stats!)
        for (const s of micro)
          if (s) {
            const l = await s.loops.data()
            for (let i = 0; i < l.length; i++) sum += l[i]
            n += l.length
            s.dispose()
          }
      fs.writeSync(fd, JSON.stringify({ type: 'train', step: opt.step, loss, gradNorm: gn, loops: sum / n }) + '\n')
    }
    for (const t of [r.loss, r.gradNorm, ...r.auxLoss]) t.dispose()
  }
  for (let i = 0; i < 4; i++) await step(i % 2 === 1)
  const ms: Record<'bare' | 'cli', number[]> = { bare: [], cli: [] }
  for (let r = 0; r < rounds; r++)
    for (const kind of (r % 2 ? ['cli', 'bare'] : ['bare', 'cli']) as ('bare' | 'cli')[]) {
      const t0 = process.hrtime.bigint()
      for (let i = 0; i < steps; i++) await step(kind === 'cli')
      ms[kind].push(Number(process.hrtime.bigint() - t0) / 1e6 / steps)
    }
  fs.closeSync(fd)
  const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]
  console.log(`${config}, B=${B} S=${S}, ${rounds} rounds of ${steps} steps (ms per step, median):`)
  console.log(`  bare trainStep, loss read:            ${med(ms.bare).toFixed(2)}`)
  console.log(`  as train runs it (stats, reads, log): ${med(ms.cli).toFixed(2)}  (x${(med(ms.cli) / med(ms.bare)).toFixed(3)})`)
  x.dispose()
  opt.dispose()
  model.dispose()
}
main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
