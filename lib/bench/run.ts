import * as fs from 'fs'
import * as os from 'os'
import { Device, cuda, getNumThreads, setNumThreads } from '../device'
import type { BenchOptions } from './args'
import { BenchCase, CaseContext, CaseMeasure, makeCase } from './cases'
import { renderChart } from './chart'
import { Progress, ProgressSink } from './progress'
import { BenchReport, CaseResult, addRatios, configOf, median, renderJson, renderTable } from './report'

export interface RunIO {
  stdout: { write(s: string): void }
  stderr: ProgressSink
}

/** Resolves --device: CUDA when available and not told otherwise. Throws a clear error when CUDA is asked for but absent. */
export function resolveDevice(asked: string | undefined): Device {
  if (asked === undefined) return Device.get(cuda.available() ? 'cuda' : 'cpu')
  if (asked.startsWith('cuda') && !cuda.available()) {
    const e = new Error(`--device ${asked}: CUDA is not available on this machine (${cuda.reason()}); use --device cpu`)
    ;(e as Error & { code: string }).code = 'ERR_CUDA_UNAVAILABLE'
    throw e
  }
  return Device.get(asked)
}

/** Samples device.memory().live while work runs (the CPU worker and CUDA stream run beside the event loop). */
class MemorySampler {
  private peak = 0
  private timer: NodeJS.Timeout | undefined
  constructor(private readonly dev: Device) {}
  sample(): number {
    const live = this.dev.memory().live
    if (live > this.peak) this.peak = live
    return live
  }
  start(): number {
    this.peak = 0
    const base = this.sample()
    this.timer = setInterval(() => this.sample(), 1)
    return base
  }
  stop(): number {
    this.sample()
    clearInterval(this.timer)
    return this.peak
  }
}

interface Prepared {
  c: BenchCase
  index: number
  m: CaseMeasure
  before: number
  peak: number
  samples: number[]
}

function errorText(e: unknown): string {
  const err = e as { code?: string; message?: string }
  return `${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}`
}

/** Builds a case, warms it up, and runs it once untimed to sample memory and keep the stats its FLOPs come from. */
async function prepare(c: BenchCase, index: number, opts: BenchOptions, dev: Device, progress: Progress): Promise<Prepared> {
  for (let i = 0; i < opts.warmup; i++) {
    progress.status(index, c.name, `warm-up ${i + 1}/${opts.warmup}`)
    await c.run()
  }
  progress.status(index, c.name, 'memory run')
  const sampler = new MemorySampler(dev)
  await dev.sync()
  const start = sampler.start()
  await c.run(true, () => sampler.sample())
  const peak = sampler.stop()
  // the steady state the run returns to; leftovers of setup freed during the run don't count against it
  const before = Math.min(start, dev.memory().live)
  const m = await c.measure()
  progress.note(index, c.name, 'ready')
  return { c, index, m, before, peak, samples: [] }
}

function result(p: Prepared): CaseResult {
  const { c, m, samples } = p
  const medianMs = median(samples)
  return {
    name: c.name,
    kind: c.kind,
    description: c.description,
    runs: samples.length,
    medianMs,
    minMs: Math.min(...samples),
    maxMs: Math.max(...samples),
    samplesMs: samples,
    flops: m.flops,
    usefulFlops: m.usefulFlops,
    tflops: m.flops / (medianMs * 1e-3) / 1e12,
    baseline: c.kind === 'forward' ? 'dense.forward' : 'dense.train',
    ratioToDense: null,
    ratioToIdeal: null,
    paramBytes: c.paramBytes,
    peakActivationBytes: Math.max(0, p.peak - p.before),
    ...(m.loopsHistogram ? { loopsHistogram: m.loopsHistogram } : {}),
    ...(m.widthTokens !== undefined ? { widthTokens: m.widthTokens } : {}),
    ...(m.maxAbsDiffToVersatile !== undefined ? { maxAbsDiffToVersatile: m.maxAbsDiffToVersatile } : {}),
  }
}

/** Runs every asked case and returns the report (printing is left to runBench). */
export async function collect(opts: BenchOptions, progressSink: ProgressSink): Promise<BenchReport> {
  const dev = resolveDevice(opts.device)
  if (opts.threads !== undefined) {
    setNumThreads(opts.threads)
    await Device.get('cpu').sync() // the thread count changes between queued ops
  }
  const threads = dev.type === 'cpu' ? getNumThreads() : null
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU'
  const deviceInfo = dev.type === 'cpu' ? `cpu (${cpu}, ${threads} threads)` : `${dev} (${cuda.deviceCount()} CUDA device(s) visible)`
  const ctx: CaseContext = { device: dev, dtype: opts.dtype, shape: opts.shape, tokens: opts.tokens, depth: opts.depth, seed: opts.seed }
  const progress = new Progress(progressSink, opts.cases.length)
  const t0 = performance.now()
  const failed: BenchReport['failed'] = []
  const live: Prepared[] = []
  // a case that fails (say an op this backend lacks) is reported, and the others still run
  const fail = async (name: string, index: number, e: unknown, c?: BenchCase) => {
    failed.push({ name, error: errorText(e) })
    progress.note(index, name, `FAILED: ${errorText(e)}`)
    c?.dispose()
    await dev.sync().catch(() => undefined)
  }
  try {
    for (const [i, name] of opts.cases.entries()) {
      let c: BenchCase | undefined
      try {
        c = await makeCase(name, ctx)
        live.push(await prepare(c, i, opts, dev, progress))
      } catch (e) {
        await fail(name, i, e, c)
      }
    }
    // timed runs in rounds over the cases, so a change in machine load mid-run hits every case alike
    for (let r = 0; r < opts.repeat; r++) {
      for (const p of [...live]) {
        progress.status(p.index, p.c.name, `timed round ${r + 1}/${opts.repeat}`)
        try {
          const t = performance.now()
          await p.c.run()
          p.samples.push(performance.now() - t)
        } catch (e) {
          live.splice(live.indexOf(p), 1)
          await fail(p.c.name, p.index, e, p.c)
        }
      }
      progress.round(r + 1, opts.repeat)
    }
  } finally {
    for (const p of live) p.c.dispose()
    progress.finish()
  }
  const cases = live.map(result)
  addRatios(cases)
  return {
    device: dev.toString(),
    deviceInfo,
    threads,
    config: configOf(opts.config, opts.shape, opts.tokens, opts.dtype, opts.depth, opts.warmup, opts.repeat, opts.seed, opts.configLabel),
    cases,
    failed,
    totalSeconds: (performance.now() - t0) / 1000,
  }
}

/** Prints the report; throws when a case failed (after printing), so the exit code says so. */
export async function runBench(opts: BenchOptions, io: RunIO): Promise<BenchReport> {
  const report = await collect(opts, io.stderr)
  io.stdout.write(opts.json ? renderJson(report) : renderTable(report))
  if (opts.chart !== undefined) {
    fs.writeFileSync(opts.chart, renderChart(report))
    if (!opts.json) io.stdout.write(`chart written to ${opts.chart}\n`)
  }
  if (report.failed.length > 0) throw new Error(`${report.failed.length} case(s) failed: ${report.failed.map((f) => f.name).join(', ')}`)
  return report
}
