import { CaseName, Shape, depthName, DepthMode } from './config'

/** One case's measurements; `--json` prints these as they are. */
export interface CaseResult {
  name: CaseName
  /** 'forward' cases compare with dense.forward, 'train' cases with dense.train. */
  kind: 'forward' | 'train'
  description: string
  runs: number
  medianMs: number
  minMs: number
  maxMs: number
  samplesMs: number[]
  /** FLOPs one run actually does (docs/SPEC.md accounting, per-token loops and λ from the run's stats). */
  flops: number
  /** FLOPs the result needs: equals `flops` except for authors.forward, which does more than VersatileFFN needs. */
  usefulFlops: number
  /** flops / medianMs. */
  tflops: number
  /** The dense case of the same kind this case is compared with. */
  baseline: 'dense.forward' | 'dense.train'
  /** medianMs / the baseline's medianMs; null when the baseline did not run. */
  ratioToDense: number | null
  /** medianMs / (usefulFlops at the baseline's FLOP rate): 1 = as fast per useful FLOP as the dense FFN. */
  ratioToIdeal: number | null
  /** Bytes of the parameters (and, for training cases, their gradients). */
  paramBytes: number
  /** Peak of device.memory().live during one run, above what was live before it. */
  peakActivationBytes: number
  /** Tokens per loop count 1..L (depth cases; from the module's stats). */
  loopsHistogram?: number[]
  /** Tokens that ran the width path. */
  widthTokens?: number
  /** authors.forward only: largest |y_authors − y_versatile| over the batch, a check that both compute the same. */
  maxAbsDiffToVersatile?: number
}

export interface BenchReport {
  device: string
  deviceInfo: string
  threads: number | null
  config: {
    /** the config's name */
    name: string
    /** the name with the sizes given on the command line that differ from the config ("tiny with D=100") */
    label: string
    dModel: number
    hidden: number
    experts: number
    topK: number
    maxDepth: number
    expertHidden: number
    tokens: number
    dtype: string
    depth: string
    warmup: number
    repeat: number
    seed: number
  }
  cases: CaseResult[]
  /** cases that threw, with the error */
  failed: { name: string; error: string }[]
  totalSeconds: number
}

export function configOf(name: string, s: Shape, tokens: number, dtype: string, depth: DepthMode, warmup: number, repeat: number, seed: number, label = name): BenchReport['config'] {
  return { name, label, ...s, tokens, dtype, depth: depthName(depth), warmup, repeat, seed }
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('median of no samples')
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** Fills ratios once every case ran. */
export function addRatios(cases: CaseResult[]): void {
  const byName = new Map(cases.map((c) => [c.name, c]))
  for (const c of cases) {
    const b = byName.get(c.baseline)
    c.ratioToDense = b ? c.medianMs / b.medianMs : null
    c.ratioToIdeal = b && b.flops > 0 ? c.medianMs / ((c.usefulFlops / b.flops) * b.medianMs) : null
  }
}

const MiB = 1024 * 1024

function fmt(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return String(x)
  if (x === 0) return '0'
  const a = Math.abs(x)
  if (a >= 10 ** digits) return x.toFixed(0)
  return x.toPrecision(digits)
}

function pad(cells: string[][], right: boolean[]): string {
  const w = cells[0].map((_, j) => Math.max(...cells.map((r) => r[j].length)))
  return cells.map((r) => r.map((c, j) => (right[j] ? c.padStart(w[j]) : c.padEnd(w[j]))).join('  ').trimEnd()).join('\n')
}

export function shapeLine(r: BenchReport): string {
  const c = r.config
  return `D=${c.dModel} I=${c.hidden} N=${c.experts} K=${c.topK} E=${c.expertHidden} L=${c.maxDepth}, T=${c.tokens} tokens, ${c.dtype}, depth ${c.depth}`
}

/** The table for people: what ran, the numbers, and how to read them. */
export function renderTable(r: BenchReport): string {
  const giga = r.device.startsWith('cpu')
  const rate = giga ? 'GFLOP/s' : 'TFLOP/s'
  const head = ['case', 'median ms', 'min', 'max', 'GFLOP', rate, 'x dense', 'x ideal', 'params MiB', 'peak act MiB']
  const rows = r.cases.map((c) => [
    c.name,
    fmt(c.medianMs),
    fmt(c.minMs),
    fmt(c.maxMs),
    fmt(c.flops / 1e9),
    fmt(giga ? c.tflops * 1000 : c.tflops),
    c.ratioToDense === null ? '-' : fmt(c.ratioToDense),
    c.ratioToIdeal === null ? '-' : fmt(c.ratioToIdeal),
    fmt(c.paramBytes / MiB),
    fmt(c.peakActivationBytes / MiB),
  ])
  const lines = [
    `versatile-ffn bench on ${r.deviceInfo}`,
    `config ${r.config.label ?? r.config.name}: ${shapeLine(r)}; ${r.config.warmup} warm-up + ${r.config.repeat} timed runs per case`,
    '',
    pad([head, ...rows], head.map((_, j) => j > 0)),
    '',
  ]
  for (const c of r.cases) {
    if (c.loopsHistogram) {
      const T = c.loopsHistogram.reduce((a, b) => a + b, 0)
      const h = c.loopsHistogram.map((n, j) => `${j + 1}:${((100 * n) / T).toFixed(0)}%`).join(' ')
      const w = c.widthTokens === undefined ? '' : `; width path on ${((100 * c.widthTokens) / T).toFixed(0)}% of tokens`
      lines.push(`${c.name}: loops per token ${h}${w}`)
    }
    if (c.maxAbsDiffToVersatile !== undefined)
      lines.push(`${c.name}: same output as versatile.forward up to ${c.maxAbsDiffToVersatile.toExponential(1)} (max abs difference)`)
  }
  const by = new Map(r.cases.map((c) => [c.name as string, c]))
  const v = by.get('versatile.forward')
  const speedups = ['authors.forward', 'loops.forward']
    .filter((n) => by.has(n) && v)
    .map((n) => {
      const q = by.get(n)!.medianMs / v!.medianMs
      return q >= 1 ? `${q.toFixed(2)}x faster than ${n}` : `${(1 / q).toFixed(2)}x slower than ${n}`
    })
  if (speedups.length) lines.push(`early exit and fusion: versatile.forward is ${speedups.join(' and ')}`)
  for (const f of r.failed) lines.push(`${f.name}: FAILED: ${f.error}`)
  lines.push(
    `x dense: median time / the dense case of the same kind (forward: dense.forward, train: dense.train).`,
    `x ideal: median time / (FLOPs the result needs at dense's ${rate}); 1.0 = no overhead for routing or early exit.`,
    `  It assumes time grows with FLOPs. At small sizes dense's time is mostly fixed per-call cost, the ideal then`,
    `  overstates every case's time and x ideal falls below 1: read it where dense runs near its FLOP rate.`,
    `FLOPs per docs/SPEC.md from each run's per-token loops and lambda; backward counted as 2x the forward work it redoes.`,
    `total ${r.totalSeconds.toFixed(1)} s`,
  )
  return lines.join('\n') + '\n'
}

export function renderJson(r: BenchReport): string {
  return JSON.stringify(r, null, 2) + '\n'
}
