// `versatile-ffn bench serve`: the GenerationEngine under 1, 8 and 32 concurrent requests, for a
// VersatileFFN model and a dense one of the same shapes: tokens/s, time to first token,
// inter-token latency p50/p99 and how late a 5 ms interval timer fires while the streams run.
import * as fs from 'fs'
import * as os from 'os'
import { monitorEventLoopDelay } from 'perf_hooks'
import { Device, cuda, getNumThreads, setNumThreads } from '../device'
import { TransformerLM } from '../nn/model'
import { GenerationEngine } from '../serve/engine'
import { matmul } from '../ops'
import { empty } from '../tensor'
import { UsageError } from './args'

export interface ServeBenchOptions {
  config: 'tiny' | 'small' | '354M'
  /** the models' parameter dtype: float32 (default) or bfloat16 (inference-only weights, half the bytes) */
  dtype: 'float32' | 'bfloat16'
  concurrency: number[]
  prompt: number
  newTokens: number
  ffn: ('versatile' | 'dense')[]
  device?: string
  threads?: number
  json: boolean
  chart?: string
  /** how decode steps run: replayed recordings (the engine's default) and/or op by op */
  steps: ('recorded' | 'op-by-op')[]
  /** runs of each case (interleaved); every figure is the median over them */
  reps: number
}

export const SERVE_HELP = `Usage: versatile-ffn bench serve [options]

Serves C concurrent requests (all arriving at once) through one GenerationEngine and reports, per
model and C: tokens/s, time to first token, inter-token latency p50/p99, and the p99 lateness of
a 5 ms interval timer and the event loop's p99 delay while the streams run. "decode tok/s" counts
only the stretch where every request is decoding (after the last first token, before the first
request finishes): the steady state of C streams, without prefill. Each case's engine zeroes its
KV pool before the clock starts (EngineOptions.prefault), as a server that has run a while has
touched its pool: the first use of fresh memory costs a page fault per 4 KiB.

Options:
  --config tiny|small|354M  model shapes (default small: V=4096 D=256 I=1024 4 layers 8 heads;
                            354M: the paper's 1,353 MiB of float32 weights, minutes per run on a
                            CPU: try --concurrency 1,32 --new-tokens 8 --ffn dense --reps 1)
  --dtype float32|bfloat16  the weights' dtype (default float32; bfloat16: an inference-only
                            model, half the bytes to stream per step, activations float32)
  --concurrency A,B,...     concurrent requests (default 1,8,32)
  --prompt N                prompt tokens per request (default 32; ragged: N/2..N)
  --new-tokens N            new tokens per request (default 64)
  --ffn versatile,dense     models (default both)
  --device cpu|cuda|cuda:N  (default: cuda when available, else cpu)
  --threads N               CPU threads per op
  --steps recorded,op-by-op decode steps replayed from a recording (default) and/or op by op;
                            with both, each case runs both ways back to back
  --reps N                  runs of every case, interleaved; each figure is the median (default 3)
  --json                    print JSON instead of the table
  --chart FILE              also write an SVG chart of tokens/s
  -h, --help                this text
`

/** Parses the arguments after `bench serve`; throws UsageError naming the flag. */
export function parseServeArgs(argv: readonly string[]): { help: true } | { help: false; options: ServeBenchOptions } {
  const o: ServeBenchOptions = { config: 'small', dtype: 'float32', concurrency: [1, 8, 32], prompt: 32, newTokens: 64, ffn: ['versatile', 'dense'], json: false, steps: ['recorded'], reps: 3 }
  const int = (f: string, v: string | undefined, min: number) => {
    if (v === undefined || !/^\d+$/.test(v) || Number(v) < min) throw new UsageError(`--${f}: expected an integer >= ${min}, got ${JSON.stringify(v)}`)
    return Number(v)
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-h' || a === '--help') return { help: true }
    if (a === '--json') { o.json = true; continue }
    const v = argv[++i]
    if (a === '--config') {
      if (v !== 'tiny' && v !== 'small' && v !== '354M') throw new UsageError(`--config: expected tiny, small or 354M, got ${JSON.stringify(v)}`)
      o.config = v
    } else if (a === '--dtype') {
      if (v !== 'float32' && v !== 'bfloat16') throw new UsageError(`--dtype: expected float32 or bfloat16, got ${JSON.stringify(v)}`)
      o.dtype = v
    } else if (a === '--concurrency') o.concurrency = (v ?? '').split(',').map((x) => int('concurrency', x, 1))
    else if (a === '--prompt') o.prompt = int('prompt', v, 1)
    else if (a === '--new-tokens') o.newTokens = int('new-tokens', v, 1)
    else if (a === '--ffn') {
      const l = (v ?? '').split(',')
      for (const f of l) if (f !== 'versatile' && f !== 'dense') throw new UsageError(`--ffn: expected versatile and/or dense, got ${JSON.stringify(f)}`)
      o.ffn = l as ServeBenchOptions['ffn']
    } else if (a === '--steps') {
      const l = (v ?? '').split(',')
      for (const f of l) if (f !== 'recorded' && f !== 'op-by-op') throw new UsageError(`--steps: expected recorded and/or op-by-op, got ${JSON.stringify(f)}`)
      o.steps = l as ServeBenchOptions['steps']
    } else if (a === '--device') o.device = v
    else if (a === '--threads') o.threads = int('threads', v, 1)
    else if (a === '--reps') o.reps = int('reps', v, 1)
    else if (a === '--chart') {
      if (!v) throw new UsageError('--chart: expected a file name')
      o.chart = v
    } else throw new UsageError(`unknown option ${a}`)
  }
  return { help: false, options: o }
}

const q = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]
}

export interface ServeCase {
  ffn: string
  /** decode steps replayed from a recording, or run op by op */
  stepMode: 'recorded' | 'op-by-op'
  concurrency: number
  tokens: number
  seconds: number
  tokensPerSecond: number
  /** tokens/s while every request decodes: from the last first token to the first finish */
  decodeTokensPerSecond: number
  ttftMsP50: number
  ttftMsP99: number
  itlMsP50: number
  itlMsP99: number
  /** p99 of (gap between ticks of a 5 ms interval timer) - 5 ms */
  timerLateMsP99: number
  /** p99 of perf_hooks' event-loop delay histogram */
  loopDelayMsP99: number
  steps: number
  /** runs behind the medians */
  runs: number
}

async function serveCase(model: TransformerLM, ffn: string, C: number, o: ServeBenchOptions, stepMode: ServeCase['stepMode']): Promise<ServeCase> {
  const engine = new GenerationEngine(model, { maxBatch: Math.max(C, 1), maxTokens: C * (o.prompt + o.newTokens) + 16 * C, recordSteps: stepMode === 'recorded', prefault: true })
  // the pool zeroed before the clock starts: a server's pool has been touched once it has run a while
  await model.device.sync()
  const V = model.config.vocabSize
  const ttft: number[] = [], itl: number[] = []
  const gaps: number[] = []
  let lastTick = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    gaps.push(now - lastTick - 5)
    lastTick = now
  }, 5)
  const h = monitorEventLoopDelay({ resolution: 1 })
  h.enable()
  const t0 = performance.now()
  let tokens = 0
  const times: number[][] = []
  await Promise.all(Array.from({ length: C }, async (_, i) => {
    const mine: number[] = (times[i] = [])
    const P = Math.ceil(o.prompt / 2) + (i % Math.ceil(o.prompt / 2 + 1))
    const prompt = Array.from({ length: Math.min(P, o.prompt) }, (_, j) => (i * 131 + j * 17) % V)
    const r = engine.generate(prompt, { maxNewTokens: o.newTokens, temperature: i % 2 ? 0.8 : 0, topK: 40, seed: i })
    let prev = performance.now()
    let first = true
    for await (const _ of r) {
      const now = performance.now()
      if (first) ttft.push(now - t0)
      else itl.push(now - prev)
      first = false
      prev = now
      tokens++
      mine.push(now)
    }
  }))
  // the steady state: every request has its first token and none has finished
  const lastFirst = Math.max(...times.map((x) => x[0] ?? Infinity)), firstDone = Math.min(...times.map((x) => x[x.length - 1] ?? -Infinity))
  const inside = times.reduce((n, x) => n + x.filter((t) => t > lastFirst && t <= firstDone).length, 0)
  const decodeTokensPerSecond = firstDone > lastFirst ? inside / ((firstDone - lastFirst) / 1000) : NaN
  const seconds = (performance.now() - t0) / 1000
  h.disable()
  clearInterval(timer)
  const steps = engine.stats().steps
  await engine.close()
  return {
    ffn, stepMode, concurrency: C, tokens, seconds, tokensPerSecond: tokens / seconds, decodeTokensPerSecond, ttftMsP50: q(ttft, 0.5), ttftMsP99: q(ttft, 0.99),
    itlMsP50: q(itl, 0.5), itlMsP99: q(itl, 0.99), timerLateMsP99: Math.max(0, q(gaps, 0.99)), loopDelayMsP99: h.percentile(99) / 1e6, steps, runs: 1,
  }
}

// each numeric figure of the runs of one case: its median
function medianCase(runs: ServeCase[]): ServeCase {
  const out = { ...runs[0], runs: runs.length } as unknown as Record<string, unknown>
  for (const [k, v] of Object.entries(runs[0]))
    if (typeof v === 'number' && k !== 'concurrency' && k !== 'runs') {
      const xs = runs.map((r) => (r as unknown as Record<string, number>)[k]).filter((x) => !Number.isNaN(x))
      out[k] = xs.length ? [...xs].sort((a, b) => a - b)[(xs.length - 1) >> 1] : NaN
    }
  return out as unknown as ServeCase
}

function chart(cases: ServeCase[], title: string): string {
  const W = 760, row = 26, left = 170, top = 40, max = Math.max(...cases.map((c) => c.tokensPerSecond))
  const bars = cases.map((c, i) => {
    const y = top + i * row, w = ((W - left - 90) * c.tokensPerSecond) / max
    return `<text x="${left - 8}" y="${y + 16}" text-anchor="end">${c.ffn}${c.stepMode === 'recorded' ? '' : ' (op by op)'} x${c.concurrency}</text><rect x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="16" fill="${c.ffn === 'dense' ? '#7f8c8d' : '#2471a3'}"/><text x="${(left + w + 6).toFixed(1)}" y="${y + 16}">${c.tokensPerSecond.toFixed(0)} tok/s</text>`
  })
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${top + cases.length * row + 20}" font-family="sans-serif" font-size="12"><text x="10" y="20" font-size="14">${title.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>${bars.join('')}</svg>\n`
}

const STREAM_MIB = 256

// bytes per second read by a batch-1 product with a 256 MiB matrix (x [1, K] times W [N, K]^T,
// every thread, best of 3): how fast this machine streams weights the way a decode step does
async function streamBandwidth(dev: Device): Promise<number> {
  const K = 8192, N = (STREAM_MIB * 2 ** 20) / 4 / K
  const w = empty([N, K], { device: dev }).fill_(0.5), x = empty([1, K], { device: dev }).fill_(1)
  try {
    let best = Infinity
    await dev.sync()
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now()
      const y = matmul(x, w, { transposeB: true })
      await dev.sync()
      best = Math.min(best, performance.now() - t0)
      y.dispose()
    }
    return (N * K * 4) / (best / 1000)
  } finally {
    w.dispose()
    x.dispose()
  }
}

/** Runs the serving benchmark and prints a table (or JSON). */
export async function runServeBench(o: ServeBenchOptions, io: { stdout: { write(s: string): void } }): Promise<void> {
  if (o.threads !== undefined) setNumThreads(o.threads)
  if (o.device?.startsWith('cuda') && !cuda.available()) throw Object.assign(new Error(`--device ${o.device}: CUDA is not available on this machine (${cuda.reason()})`), { code: 'ERR_CUDA_UNAVAILABLE' })
  const dev = Device.get(o.device ?? (cuda.available() ? 'cuda' : 'cpu'))
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU'
  const head = `versatile-ffn bench serve on ${dev} (${dev.type === 'cpu' ? `${cpu}, ${getNumThreads()} threads` : 'cuda'}), config ${o.config}, ${o.dtype} weights, prompts ${Math.ceil(o.prompt / 2)}..${o.prompt} tokens, ${o.newTokens} new tokens each, greedy and sampled alternating`
  const cases: ServeCase[] = []
  let weightBytes = 0
  for (const ffn of o.ffn) {
    const model = new TransformerLM({ ...TransformerLM.config(o.config), ffn, seed: 1, device: dev, dtype: o.dtype })
    weightBytes = [...model.parameters().values()].reduce((s, p) => s + p.size * (p.dtype === 'bfloat16' ? 2 : 4), 0)
    for (const m of o.steps) await serveCase(model, ffn, 1, { ...o, newTokens: 4 }, m)
    // the runs of the cases interleaved, so a change in the machine's load spreads over all of them
    const runs = new Map<string, ServeCase[]>()
    for (let rep = 0; rep < o.reps; rep++)
      for (const C of o.concurrency)
        for (const m of o.steps) {
          const key = `${C} ${m}`
          runs.set(key, [...(runs.get(key) ?? []), await serveCase(model, ffn, C, o, m)])
        }
    for (const r of runs.values()) cases.push(medianCase(r))
    model.dispose()
  }
  const bandwidth = await streamBandwidth(dev)
  // batch-1 decoding against streaming the weights once: a decode step's time is the gap between tokens
  const streamMs = (weightBytes / bandwidth) * 1000
  const decode = cases.filter((c) => c.concurrency === 1).map((c) => ({ ffn: c.ffn, stepMode: c.stepMode, msPerToken: c.itlMsP50, overStream: c.itlMsP50 / streamMs }))
  if (o.chart) fs.writeFileSync(o.chart, chart(cases, head))
  if (o.json) {
    io.stdout.write(JSON.stringify({ device: String(dev), config: o.config, dtype: o.dtype, prompt: o.prompt, newTokens: o.newTokens, weightBytes, bandwidthBytesPerSecond: bandwidth, streamMs, decode, cases }, null, 2) + '\n')
    return
  }
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2))
  const lines = [head, `medians of ${o.reps} interleaved runs per case`, '', 'model      steps     conc  tokens   tok/s  decode tok/s  ttft p50  ttft p99  itl p50  itl p99  timer late p99  loop delay p99  steps',
    ...cases.map((c) => `${c.ffn.padEnd(10)} ${c.stepMode.padEnd(9)} ${String(c.concurrency).padStart(4)} ${String(c.tokens).padStart(7)} ${f(c.tokensPerSecond).padStart(7)} ${(Number.isNaN(c.decodeTokensPerSecond) ? '-' : f(c.decodeTokensPerSecond)).padStart(13)} ${f(c.ttftMsP50).padStart(9)} ${f(c.ttftMsP99).padStart(9)} ${f(c.itlMsP50).padStart(8)} ${f(c.itlMsP99).padStart(8)} ${f(c.timerLateMsP99).padStart(15)} ${f(c.loopDelayMsP99).padStart(15)} ${String(c.steps).padStart(6)}`)]
  for (const ffn of o.ffn)
    for (const m of o.steps) {
      const mine = cases.filter((c) => c.ffn === ffn && c.stepMode === m)
      const one = mine.find((c) => c.concurrency === 1), most = mine[mine.length - 1]
      if (one && most && most !== one)
        lines.push(`${ffn}${o.steps.length > 1 ? ` (${m})` : ''}: ${most.concurrency} concurrent give ${(most.tokensPerSecond / one.tokensPerSecond).toFixed(2)}x the tokens/s of one at a time (decoding: ${(most.decodeTokensPerSecond / one.decodeTokensPerSecond).toFixed(2)}x)`)
    }
  if (o.steps.length > 1)
    for (const c of cases.filter((x) => x.stepMode === 'recorded')) {
      const op = cases.find((x) => x.ffn === c.ffn && x.concurrency === c.concurrency && x.stepMode === 'op-by-op')
      if (op) lines.push(`${c.ffn} x${c.concurrency}: recorded steps give ${(c.tokensPerSecond / op.tokensPerSecond).toFixed(2)}x the tokens/s of op by op`)
    }
  lines.push(`weights ${(weightBytes / 2 ** 20).toFixed(1)} MiB; memory bandwidth ${(bandwidth / 1e9).toFixed(1)} GB/s (read by a batch-1 product with a ${STREAM_MIB} MiB matrix); streaming the weights once takes ${f(streamMs)} ms`)
  for (const d of decode) lines.push(`${d.ffn}${o.steps.length > 1 ? ` (${d.stepMode})` : ''}: batch-1 decoding ${f(d.msPerToken)} ms per token (itl p50) = ${d.overStream.toFixed(2)}x the time to stream the weights`)
  lines.push('times in ms; ttft from submission (all requests arrive at once); itl = gap between a request\'s tokens; timer late = how much later than 5 ms a 5 ms interval fired; decode tok/s = while every request decodes')
  io.stdout.write(lines.join('\n') + '\n')
}
