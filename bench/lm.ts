// Training cost of the language model, VersatileFFN against the dense FFN, across precisions and
// activation recompute modes, in one run: one transformer block (forward + backward) and the whole
// model (trainStep: forward, loss, backward, clip, AdamW) with as many layers as asked. Each case
// reports step time (median), tokens/s, the memory a training forward keeps for backward, and the
// peak of a step above what the model and optimizer hold (device memory(), measured).
//   npm run bench:lm -- [--config 354M] [--seq 1024] [--batch 1] [--layers 15] [--steps 2]
//     [--ffn versatile,dense,moe,loops] [--precision float32,bf16-mixed] [--recompute none,ffn,block]
//     [--parts block,model] [--device cpu|cuda] [--threads 2] [--json]
// A precision the model does not accept yet is reported as rejected (with the model's error) and
// the run goes on; float32 is the default and is not passed as an option.
import { randn, setNumThreads, tensor, TransformerLM, AdamW, trainStep, CONFIGS, device as deviceOf, Device, Tensor, VffnError } from '../lib/index'

const args = process.argv.slice(2)
const flag = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : undefined
}
const num = (name: string, dflt: number) => {
  const v = flag(name)
  const n = v === undefined ? dflt : Number(v)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: expected a positive integer, got ${v}`)
  return n
}
const list = <T extends string>(name: string, allowed: readonly T[], dflt: readonly T[]): T[] => {
  const v = flag(name)
  const out = (v === undefined ? [...dflt] : v.split(',')) as T[]
  for (const x of out) if (!allowed.includes(x)) throw new Error(`--${name}: expected some of ${allowed.join(',')}, got ${x}`)
  return out
}
const configName = (flag('config') ?? '354M') as keyof typeof CONFIGS
if (!(configName in CONFIGS)) throw new Error(`--config: expected one of ${Object.keys(CONFIGS).join(', ')}, got ${configName}`)
const cfg = CONFIGS[configName]
const threads = num('threads', 2)
const S = num('seq', Math.min(1024, cfg.maxSeqLen))
const B = num('batch', 1)
const layers = num('layers', cfg.nLayers)
const steps = num('steps', 2)
const ffns = list('ffn', ['versatile', 'dense', 'moe', 'loops'] as const, ['versatile', 'dense'])
const precisions = list('precision', ['float32', 'bf16-mixed'] as const, ['float32', 'bf16-mixed'])
const recomputes = list('recompute', ['none', 'ffn', 'block'] as const, ['none', 'ffn', 'block'])
const parts = list('parts', ['block', 'model'] as const, ['block', 'model'])
const json = args.includes('--json')
const dev: Device = deviceOf(flag('device') ?? 'cpu')
setNumThreads(threads)
const T = B * S
const MiB = 1024 * 1024

type Ffn = (typeof ffns)[number]
type Precision = (typeof precisions)[number]
type Recompute = (typeof recomputes)[number]
interface Result {
  part: 'block' | 'model'
  ffn: Ffn
  precision: Precision
  recompute: Recompute
  /** median wall seconds per step over `steps` after a warm-up */
  s?: number
  /** the steps' wall seconds */
  all?: number[]
  /** process CPU seconds per thread per step (steadier than wall time on a shared machine; CPU only) */
  cpu?: number
  tokensPerS?: number
  /** bytes live after a training forward, above what was live before it: what backward will read */
  saved?: number
  /** the most bytes live during a step above what was live before it (the step's working memory) */
  peak?: number
  /** bytes the model (and optimizer) hold between steps */
  resident?: number
  rejected?: string
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]

async function live(): Promise<number> {
  await dev.sync()
  return dev.memory().live
}

// the model options of one case: precision passed through unless it is the default
function modelOptions(ffn: Ffn, precision: Precision, recompute: Recompute, nLayers: number, vocabSize: number) {
  return {
    ...cfg, nLayers, vocabSize, ffn, maxSeqLen: Math.max(S, cfg.maxSeqLen), device: dev, recompute,
    ...(precision === 'float32' ? {} : { precision }),
  }
}

function build(r: Result, nLayers: number, vocabSize: number): TransformerLM | undefined {
  try {
    return new TransformerLM(modelOptions(r.ffn, r.precision, r.recompute, nLayers, vocabSize) as ConstructorParameters<typeof TransformerLM>[0])
  } catch (e) {
    if (!(e instanceof VffnError)) throw e
    r.rejected = `${e.code}: ${e.message}`
    return undefined
  }
}

// one warm-up (first-touch allocation, lazily made gradients and moments), then `steps` timed
// steps, each with its own peak; returns the median time and the largest peak
async function measure(r: Result, step: () => Promise<void>): Promise<void> {
  await step()
  const base = await live()
  r.resident = base
  const times: number[] = []
  let peak = 0
  const c0 = process.cpuUsage()
  for (let i = 0; i < steps; i++) {
    dev.resetPeakMemory()
    const t0 = process.hrtime.bigint()
    await step()
    await dev.sync()
    times.push(Number(process.hrtime.bigint() - t0) / 1e9)
    peak = Math.max(peak, dev.memory().peak - base)
  }
  const c = process.cpuUsage(c0)
  r.all = times
  r.s = median(times)
  r.cpu = dev.type === 'cpu' ? (c.user + c.system) / 1e6 / threads / steps : undefined
  r.tokensPerS = T / r.s
  r.peak = peak
}

async function blockCase(r: Result): Promise<void> {
  const m = build(r, 1, 16)
  if (!m) return
  try {
    await blockBody(r, m)
  } finally {
    m.dispose()
  }
}

async function blockBody(r: Result, m: TransformerLM): Promise<void> {
  const blk = m.blocks[0]
  const x = randn([T, cfg.dModel], { seed: 1 }).to(dev), dy = randn([T, cfg.dModel], { seed: 2, std: 1e-3 }).to(dev)
  let step = 0
  // what backward will read: live after the forward, above what was live before
  {
    m.gradients()
    const before = await live()
    const f = blk.forward(x, B, S, { train: true, step: step++ })
    r.saved = (await live()) - before
    blk.backward(f.saved!, dy).dispose()
    f.y.dispose()
    ;(f.auxLoss as Tensor | undefined)?.dispose()
    ;(f.stats as { dispose?(): void } | undefined)?.dispose?.()
  }
  await measure(r, async () => {
    const f = blk.forward(x, B, S, { train: true, step: step++ })
    const dx = blk.backward(f.saved!, dy)
    f.y.dispose()
    ;(f.auxLoss as Tensor | undefined)?.dispose()
    ;(f.stats as { dispose?(): void } | undefined)?.dispose?.()
    await dx.data()
    dx.dispose()
  })
  x.dispose()
  dy.dispose()
}

async function modelCase(r: Result): Promise<void> {
  const m = build(r, layers, cfg.vocabSize)
  if (!m) return
  try {
    await modelBody(r, m)
  } finally {
    m.dispose()
  }
}

async function modelBody(r: Result, m: TransformerLM): Promise<void> {
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-4 })
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919) % cfg.vocabSize)
  const tg = Int32Array.from({ length: T }, (_, i) => (i * 104729 + 1) % cfg.vocabSize)
  const x = tensor(ids, [B, S], { dtype: 'int32', device: dev }), y = tensor(tg, [B, S], { dtype: 'int32', device: dev })
  {
    const before = await live()
    const out = m.forward(x, { train: true })
    r.saved = (await live()) - before
    const loss = m.loss(out, y)
    m.backward(out)
    out.dispose()
    loss.dispose()
    m.zeroGrad()
  }
  await measure(r, async () => {
    const s = trainStep(m, opt, x, y)
    await s.loss.data()
  })
  opt.dispose()
  x.dispose()
  y.dispose()
}

let lastRejected: string | undefined
const mib = (b?: number) => (b === undefined ? '-' : (b / MiB).toFixed(1))
function line(r: Result, ref?: Result): string {
  const head = `${r.part.padEnd(5)} ${r.ffn.padEnd(9)} ${r.precision.padEnd(10)} ${r.recompute.padEnd(5)}`
  if (r.rejected) {
    const same = r.rejected === lastRejected
    lastRejected = r.rejected
    return same ? `${head}  rejected (as above)` : `${head}  rejected: ${r.rejected}`
  }
  const cpu = r.cpu === undefined ? '' : ` (CPU/thread ${r.cpu.toFixed(2)} s)`
  let rel = ''
  if (ref && ref !== r && ref.s && ref.saved && ref.peak)
    rel = `   vs none: time ${(r.s! / ref.s).toFixed(2)}x${r.cpu && ref.cpu ? ` (CPU ${(r.cpu / ref.cpu).toFixed(2)}x)` : ''}, saved ${(ref.saved / r.saved!).toFixed(2)}x less, peak ${(ref.peak / r.peak!).toFixed(2)}x less`
  return `${head}  ${r.s!.toFixed(2)} s${cpu}  ${r.tokensPerS!.toFixed(0)} tok/s  saved ${mib(r.saved)} MiB  peak +${mib(r.peak)} MiB  resident ${mib(r.resident)} MiB${rel}`
}

async function main() {
  const say = (s: string) => json || console.log(s)
  say(`${configName} shapes (D=${cfg.dModel}, I=${cfg.hidden}, H=${cfg.nHeads}, V=${cfg.vocabSize}, N=8, K=2, L=4), ${B}x${S} tokens, ${dev}, ${threads} threads, ${steps} steps after a warm-up (median); model: ${layers} layers`)
  say('part  ffn       precision  recmp  step time, tokens/s, memory kept by the forward, peak of a step above the resident model (+ optimizer)')
  const rows: Result[] = []
  for (const part of parts)
    for (const ffn of ffns)
      for (const precision of precisions) {
        let ref: Result | undefined
        for (const recompute of recomputes) {
          const r: Result = { part, ffn, precision, recompute }
          try {
            await (part === 'block' ? blockCase(r) : modelCase(r))
          } catch (e) {
            // a mode the device does not take yet (recompute 'ffn' on CUDA): reported, the run goes on
            if (!(e instanceof VffnError)) throw e
            r.rejected = `${e.code}: ${e.message}`
            r.s = r.saved = r.peak = undefined
          }
          if (recompute === 'none' && !r.rejected) ref = r
          rows.push(r)
          say(line(r, ref))
        }
      }
  if (json) console.log(JSON.stringify({ config: configName, shapes: { ...cfg, layers, B, S, threads, device: String(dev), steps }, rows }, null, 1))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
