import { BenchReport, shapeLine } from './report'

// A horizontal bar chart of median time per case with min-max whiskers, as plain SVG (no dependencies).

const COLORS: Record<string, string> = { dense: '#7f8c8d', versatile: '#2471a3', moe: '#27ae60', loops: '#d68910', authors: '#c0392b' }

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** Round axis step: 1, 2 or 5 times a power of ten, giving about five ticks up to `max`. */
function tickStep(max: number): number {
  const raw = max / 5
  const p = 10 ** Math.floor(Math.log10(raw))
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p
  return 10 * p
}

const LEGEND: [string, string][] = [['dense', 'dense FFN'], ['versatile', 'VersatileFFN'], ['moe', 'mixture of experts'], ['loops', 'k-loop baseline'], ['authors', "authors' strategy"]]

/** Two panels (inference forward, training step), each on its own time axis, with a colour legend. */
export function renderChart(r: BenchReport): string {
  const W = 900
  const left = 150
  const right = 270
  const row = 34
  const bar = 20
  const plotW = W - left - right
  const panels = [
    ['inference forward', r.cases.filter((c) => c.name.endsWith('.forward'))],
    ['training step (forward + backward)', r.cases.filter((c) => c.name.endsWith('.train'))],
  ].filter(([, cs]) => (cs as unknown[]).length > 0) as [string, BenchReport['cases']][]
  let y0 = 84
  const body: string[] = []
  for (const [title, cases] of panels) {
    const n = cases.length
    const maxMs = Math.max(...cases.map((c) => c.maxMs), 1e-9)
    const step = tickStep(maxMs)
    const axisMax = Math.ceil(maxMs / step) * step
    const x = (ms: number) => left + (ms / axisMax) * plotW
    const top = y0 + 22
    body.push(`<text x="${left}" y="${y0 + 8}" font-size="13" font-weight="bold">${esc(title)}</text>`)
    for (let t = 0; t <= axisMax + step / 2; t += step) {
      const xx = x(t).toFixed(1)
      body.push(`<line x1="${xx}" y1="${top - 6}" x2="${xx}" y2="${top + n * row}" stroke="#e5e5e5"/>`)
      body.push(`<text x="${xx}" y="${top + n * row + 16}" font-size="11" text-anchor="middle" fill="#444">${+t.toPrecision(6)}</text>`)
    }
    body.push(`<text x="${left + plotW / 2}" y="${top + n * row + 32}" font-size="12" text-anchor="middle">milliseconds</text>`)
    cases.forEach((c, i) => {
      const y = top + i * row + (row - bar) / 2
      const color = COLORS[c.name.split('.')[0]] ?? '#555'
      const cy = (y + bar / 2).toFixed(1)
      body.push(`<text x="${left - 8}" y="${(y + bar / 2 + 4).toFixed(1)}" font-size="12" text-anchor="end">${esc(c.name)}</text>`)
      body.push(`<rect x="${left}" y="${y.toFixed(1)}" width="${Math.max(x(c.medianMs) - left, 1).toFixed(1)}" height="${bar}" fill="${color}"/>`)
      body.push(`<line x1="${x(c.minMs).toFixed(1)}" y1="${cy}" x2="${x(c.maxMs).toFixed(1)}" y2="${cy}" stroke="#111" stroke-width="1.5"/>`)
      for (const v of [c.minMs, c.maxMs])
        body.push(`<line x1="${x(v).toFixed(1)}" y1="${(y + 5).toFixed(1)}" x2="${x(v).toFixed(1)}" y2="${(y + bar - 5).toFixed(1)}" stroke="#111" stroke-width="1.5"/>`)
      const ratio = c.ratioToDense === null || c.name === c.baseline ? '' : `, ${c.ratioToDense.toFixed(2)}x ${c.baseline}`
      const ideal = c.ratioToIdeal === null ? '' : `, ${c.ratioToIdeal.toFixed(2)}x ideal`
      const ms = c.medianMs >= 1000 ? c.medianMs.toFixed(0) : c.medianMs.toPrecision(3)
      body.push(`<text x="${(x(axisMax) + 8).toFixed(1)}" y="${(y + bar / 2 + 4).toFixed(1)}" font-size="11" fill="#222">${esc(`${ms} ms${ratio}${ideal}`)}</text>`)
    })
    y0 = top + n * row + 48
  }
  const H = y0 + 4
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`)
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  out.push(`<text x="${left}" y="22" font-size="15" font-weight="bold">versatile-ffn bench: median time per run (min-max whiskers)</text>`)
  out.push(`<text x="${left}" y="42" font-size="11" fill="#444">${esc(`${r.deviceInfo}; ${shapeLine(r)}`)}</text>`)
  LEGEND.forEach(([key, label], i) => {
    const lx = left + i * 140
    out.push(`<rect x="${lx}" y="54" width="12" height="12" fill="${COLORS[key]}"/>`)
    out.push(`<text x="${lx + 17}" y="64" font-size="11" fill="#222">${esc(label)}</text>`)
  })
  out.push(...body)
  out.push('</svg>')
  return out.join('\n') + '\n'
}
