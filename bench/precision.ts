// float32 vs bf16-mixed training: step time (median of interleaved runs) and memory (static:
// parameters, compute copies, gradients and moments; peak: the step's rise above that) for the
// tiny and small configs, both precisions side by side in one run on one device.
// usage: npx ts-node --transpile-only bench/precision.ts [--device cpu|cuda] [--runs N] [--configs tiny,small] [--batch B] [--seq S]
import { AdamW, Device, Tensor, TransformerLM, tensor, trainStep } from '../lib/index'
import { mulberry32 } from '../lib/random'

const argv = process.argv.slice(2)
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 ? argv[i + 1] : dflt
}
const dev = Device.get(opt('device', 'cpu'))
const runs = Number(opt('runs', '7'))
const configs = opt('configs', 'tiny,small').split(',') as ('tiny' | 'small')[]
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]
const mib = (b: number) => (b / 2 ** 20).toFixed(2)

interface Run {
  model: TransformerLM
  opt: AdamW
  static: number
  times: number[]
  peaks: number[]
}

// peak of device.memory().live while the queued step runs (the worker runs beside the event loop)
async function step(r: Run, tok: Tensor, tgt: Int32Array): Promise<void> {
  await dev.sync()
  const base = dev.memory().live
  let peak = base
  const timer = setInterval(() => (peak = Math.max(peak, dev.memory().live)), 1)
  const t0 = process.hrtime.bigint()
  const res = trainStep(r.model, r.opt, tok, tgt)
  peak = Math.max(peak, dev.memory().live)
  await res.loss.data()
  const st = await res.status
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  clearInterval(timer)
  if (!st.ok) throw st.error
  for (const t of [res.loss, res.gradNorm, ...res.auxLoss]) t.dispose()
  r.times.push(ms)
  r.peaks.push(peak - base)
}

async function main() {
  console.log(`device ${dev}, ${runs} interleaved runs per precision, medians`)
  console.log('config  batch x seq  precision    step ms   ratio   static MiB   step peak MiB   ratio')
  for (const name of configs) {
    const cfg = TransformerLM.config(name, { device: dev, seed: 1 })
    const B = Number(opt('batch', '4')), S = Number(opt('seq', name === 'tiny' ? '128' : '256'))
    const r = mulberry32(7)
    const ids = () => Int32Array.from({ length: B * S }, () => Math.floor(r() * cfg.vocabSize) % cfg.vocabSize)
    const tok = tensor(ids(), [B, S], { dtype: 'int32', device: dev })
    const tgt = ids()
    const made: Run[] = []
    for (const precision of ['float32', 'bf16-mixed'] as const) {
      await dev.sync()
      const before = dev.memory().live
      const model = new TransformerLM({ ...cfg, precision })
      const o = new AdamW(model.parameters(), model.gradients())
      await dev.sync()
      made.push({ model, opt: o, static: dev.memory().live - before, times: [], peaks: [] })
    }
    for (const m of made) for (let w = 0; w < 2; w++) await step(m, tok, tgt) // warm-up
    for (const m of made) m.times.length = m.peaks.length = 0
    for (let i = 0; i < runs; i++) for (const m of i % 2 ? [...made].reverse() : made) await step(m, tok, tgt)
    const [a, b] = made
    for (const m of made) {
      const tr = median(m.times) / median(a.times), pr = median(m.peaks) / median(a.peaks)
      console.log(`${name.padEnd(7)} ${`${B} x ${S}`.padEnd(12)} ${m.model.precision.padEnd(11)} ${median(m.times).toFixed(1).padStart(9)} ${tr.toFixed(3).padStart(7)} ${mib(m.static).padStart(12)} ${mib(median(m.peaks)).padStart(15)} ${pr.toFixed(3).padStart(7)}`)
    }
    for (const m of [a, b]) {
      m.model.dispose()
      m.opt.dispose()
    }
    tok.dispose()
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
