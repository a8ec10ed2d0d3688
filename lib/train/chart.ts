// Loss curves of one or more training runs as plain SVG (no dependencies): train loss (thin) and
// validation loss (thick, with dots) against steps and against wall time, one colour per run.
import * as fs from 'fs'
import * as path from 'path'
import { LogLine, TrainLine, ValLine, readLog } from './log'

/** One run to draw: its label and its log lines. */
export interface ChartRun {
  name: string
  lines: readonly LogLine[]
}

const COLORS = ['#2471a3', '#c0392b', '#27ae60', '#d68910', '#8e44ad', '#16a085', '#7f8c8d', '#2c3e50']

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** Round axis ticks: multiples of 1, 2 or 5 times a power of ten, about `n` of them over [lo, hi]. */
function ticks(lo: number, hi: number, n = 5, past = false): number[] {
  const span = hi - lo || Math.abs(hi) || 1
  const raw = span / n
  const p = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p
  const out: number[] = []
  // past: up to the first tick at or after hi, so the axis ends on a round number
  const end = past ? Math.ceil(hi / step - 1e-9) * step : hi
  for (let t = Math.ceil(lo / step) * step; t <= end + step * 1e-9; t += step) out.push(+t.toPrecision(12))
  return out
}

// the last line for each step wins: a step logged twice (a resume repeating it) is drawn once
function series<T extends TrainLine | ValLine>(lines: readonly LogLine[], type: T['type']): T[] {
  const by = new Map<number, T>()
  for (const l of lines) if (l.type === type) by.set(l.step, l as T)
  return [...by.values()].sort((a, b) => a.step - b.step)
}

/** The SVG: two panels (loss against step, loss against training time), a legend of runs and line kinds. */
export function renderLossChart(runs: readonly ChartRun[]): string {
  const W = 980, panelW = 400, panelH = 300, left = 70, gap = 90, top = 70 + 18 * Math.ceil(runs.length / 3)
  const data = runs.map((r) => ({ name: r.name, train: series<TrainLine>(r.lines, 'train'), val: series<ValLine>(r.lines, 'val') }))
  const losses = data.flatMap((d) => [...d.train, ...d.val].map((l) => l.loss)).filter(Number.isFinite)
  const yLo0 = losses.length ? Math.min(...losses) : 0, yHi0 = losses.length ? Math.max(...losses) : 1
  const pad = (yHi0 - yLo0) * 0.05 || 0.5
  const yT = ticks(yLo0 - pad, yHi0 + pad)
  const yLo = Math.min(yT[0], yLo0 - pad), yHi = Math.max(yT[yT.length - 1], yHi0 + pad)
  const out: string[] = []
  const H = top + panelH + 60
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`)
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  out.push(`<text x="${left}" y="22" font-size="15" font-weight="bold">versatile-ffn train: loss (nats per token)</text>`)
  // legend: line kinds, then one colour per run
  out.push(`<line x1="${left}" y1="40" x2="${left + 24}" y2="40" stroke="#333" stroke-width="1.2"/><text x="${left + 30}" y="44" font-size="11">train loss (each step)</text>`)
  out.push(`<line x1="${left + 170}" y1="40" x2="${left + 194}" y2="40" stroke="#333" stroke-width="2.5"/><circle cx="${left + 182}" cy="40" r="3" fill="#333"/><text x="${left + 200}" y="44" font-size="11">validation loss</text>`)
  data.forEach((d, i) => {
    const lx = left + (i % 3) * 300, ly = 58 + 18 * Math.floor(i / 3)
    out.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`)
    out.push(`<text x="${lx + 17}" y="${ly + 10}" font-size="11">${esc(d.name)}</text>`)
  })
  const panels: [string, (l: TrainLine | ValLine) => number][] = [['step', (l) => l.step], ['training time (s)', (l) => l.time]]
  panels.forEach(([label, xOf], p) => {
    const x0 = left + p * (panelW + gap)
    const all = data.flatMap((d) => [...d.train, ...d.val].map(xOf)).filter(Number.isFinite)
    const xHi0 = all.length ? Math.max(...all) : 1
    const xT = ticks(0, xHi0 || 1, 5, true)
    const xHi = Math.max(xT[xT.length - 1], xHi0 || 1)
    const X = (v: number) => x0 + (v / xHi) * panelW
    const Y = (v: number) => top + panelH - ((v - yLo) / (yHi - yLo)) * panelH
    out.push(`<rect x="${x0}" y="${top}" width="${panelW}" height="${panelH}" fill="none" stroke="#999"/>`)
    for (const t of xT) {
      out.push(`<line x1="${X(t).toFixed(1)}" y1="${top}" x2="${X(t).toFixed(1)}" y2="${top + panelH}" stroke="#eee"/>`)
      out.push(`<text x="${X(t).toFixed(1)}" y="${top + panelH + 16}" font-size="11" text-anchor="middle" fill="#444">${t}</text>`)
    }
    for (const t of yT) {
      if (t < yLo || t > yHi) continue
      out.push(`<line x1="${x0}" y1="${Y(t).toFixed(1)}" x2="${x0 + panelW}" y2="${Y(t).toFixed(1)}" stroke="#eee"/>`)
      out.push(`<text x="${x0 - 6}" y="${(Y(t) + 4).toFixed(1)}" font-size="11" text-anchor="end" fill="#444">${t}</text>`)
    }
    out.push(`<text x="${x0 + panelW / 2}" y="${top + panelH + 36}" font-size="12" text-anchor="middle">${esc(label)}</text>`)
    out.push(`<text x="${x0 - 48}" y="${top + panelH / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 ${x0 - 48} ${top + panelH / 2})">loss</text>`)
    data.forEach((d, i) => {
      const c = COLORS[i % COLORS.length]
      const pts = (ls: (TrainLine | ValLine)[]) => ls.filter((l) => Number.isFinite(l.loss) && Number.isFinite(xOf(l))).map((l) => `${X(xOf(l)).toFixed(1)},${Y(l.loss).toFixed(1)}`)
      const tr = pts(d.train)
      if (tr.length) out.push(`<polyline class="train" fill="none" stroke="${c}" stroke-width="1.2" stroke-opacity="0.8" points="${tr.join(' ')}"/>`)
      const va = pts(d.val)
      if (va.length) {
        out.push(`<polyline class="val" fill="none" stroke="${c}" stroke-width="2.5" points="${va.join(' ')}"/>`)
        for (const pt of va) out.push(`<circle cx="${pt.split(',')[0]}" cy="${pt.split(',')[1]}" r="3" fill="${c}"/>`)
      }
    })
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

/** Runs `versatile-ffn chart DIR... --out FILE`: one SVG overlaying the runs' losses. */
export function runChart(dirs: string[], out: string, io: { stdout: { write(s: string): void } }): void {
  const names = dirs.map((d) => path.basename(path.resolve(d)))
  // folders with the same name are told apart by their path
  const runs = dirs.map((d, i) => ({ name: names.filter((n) => n === names[i]).length > 1 ? d : names[i], lines: readLog(d) }))
  fs.writeFileSync(out, renderLossChart(runs))
  io.stdout.write(`${out}: ${runs.length} run${runs.length > 1 ? 's' : ''}\n`)
}
