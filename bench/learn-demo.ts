// Does it learn? Trains a tiny VersatileFFN language model and a dense one with the same
// parameter count on a task that needs several steps of computation, on CPU, and prints both
// loss curves, final accuracies, and writes an SVG chart.
//
// Task (generated in code, fresh batches every step, so test accuracy is generalisation):
// tokens a_1..a_n in Z_p; the target at position i is v_i = (3·v_{i-1} + a_i) mod p, v_0 = 0.
// v_i depends on every earlier token with weight 3^(i-j) mod p: an i-step chained computation
// the model must carry out inside one forward pass (intermediate values are never shown).
//   npm run demo [-- --steps 2000 --seq 8 --p 7 --batch 64 --noise gumbel --temperature paper|stretched --seed 7 --threads 2 --out bench/out/learn-demo.svg]
import { mkdirSync, writeFileSync } from 'node:fs'
import * as path from 'node:path'
import { setNumThreads, stretchedTemperature, tensor, TransformerLM, AdamW, trainStep } from '../lib/index'

const args = process.argv.slice(2)
const arg = (name: string, dflt: number | string) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? (typeof dflt === 'number' ? Number(args[i + 1]) : args[i + 1]) : dflt
}
const STEPS = arg('steps', 2000) as number
const SEQ = arg('seq', 8) as number
const P = arg('p', 7) as number
const BATCH = arg('batch', 64) as number
const OUT = arg('out', 'bench/out/learn-demo.svg') as string
// 'gumbel' (docs/SPEC.md training) or 'none' (deterministic loop choice in training)
const NOISE = arg('noise', 'gumbel') as 'gumbel' | 'none'
// the Gumbel temperature: 'paper' (per step, near 5 for thousands of steps) or 'stretched' over --steps
const TEMPERATURE = arg('temperature', 'paper') as 'paper' | 'stretched'
if (TEMPERATURE !== 'paper' && TEMPERATURE !== 'stretched') throw new Error('--temperature: paper or stretched')
// seed of both models' weights and of the training batches
const SEED = arg('seed', 7) as number
setNumThreads(arg('threads', 2) as number)

function rng(seed: number) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = Math.imul(a ^ (a >>> 15), a | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function batch(r: () => number, B: number): { x: Int32Array; y: Int32Array } {
  const x = new Int32Array(B * SEQ), y = new Int32Array(B * SEQ)
  for (let b = 0; b < B; b++) {
    let v = 0
    for (let i = 0; i < SEQ; i++) {
      const a = Math.floor(r() * P)
      v = (3 * v + a) % P
      x[b * SEQ + i] = a
      y[b * SEQ + i] = v
    }
  }
  return { x, y }
}

// accuracy per position on a held-out set (greedy argmax of the logits)
async function evaluate(m: TransformerLM, data: { x: Int32Array; y: Int32Array }, B: number): Promise<{ acc: number[]; loops: number[] }> {
  const out = m.forward(tensor(data.x, [B, SEQ], { dtype: 'int32' }), { train: false })
  const logits = await out.logits.data()
  // mean loops run per layer at inference (VersatileFFN only)
  const loops: number[] = []
  for (const st of out.stats as ({ loops?: { intData(): Promise<Int32Array> } } | undefined)[])
    if (st?.loops) loops.push((await st.loops.intData()).reduce((a, b) => a + b, 0) / (B * SEQ))
  const V = m.config.vocabSize
  const hit = new Array<number>(SEQ).fill(0)
  for (let t = 0; t < B * SEQ; t++) {
    let best = 0
    for (let j = 1; j < V; j++) if (logits[t * V + j] > logits[t * V + best]) best = j
    if (best === data.y[t]) hit[t % SEQ]++
  }
  return { acc: hit.map((h) => h / B), loops }
}

interface Run {
  name: string
  params: number
  losses: number[]
  acc: number[]
  loops: number[]
  seconds: number
  skipped: number
}

async function train(ffn: 'dense' | 'versatile'): Promise<Run> {
  const D = 64, I = 256, N = 8, L = 4
  // VersatileFFN adds (N + L)·D router and loop-head weights per layer; the dense model gets
  // (N + L)·D / (3·D) = 4 more hidden units, which is exactly the same count
  const hidden = ffn === 'dense' ? I + (N + L) / 3 : I
  const m = new TransformerLM({ vocabSize: P, dModel: D, nLayers: 2, nHeads: 4, hidden, maxSeqLen: SEQ, ffn, experts: N, topK: 2, maxDepth: L, seed: SEED })
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 3e-3 })
  const schedule = { lr: 3e-3, warmupSteps: 30, totalSteps: STEPS }
  // the default seed keeps the batch stream of the runs recorded in bench/README.md
  const r = rng(SEED === 7 ? 1 : SEED * 7919)
  const losses: number[] = []
  let skipped = 0
  const t0 = process.hrtime.bigint()
  for (let s = 0; s < STEPS; s++) {
    const { x, y } = batch(r, BATCH)
    const res = trainStep(m, opt, tensor(x, [BATCH, SEQ], { dtype: 'int32' }), tensor(y, [BATCH, SEQ], { dtype: 'int32' }), { schedule, noise: NOISE, ...(TEMPERATURE === 'stretched' ? { temperature: stretchedTemperature(opt.step, STEPS) } : {}) })
    losses.push((await res.loss.data())[0])
    // a non-finite gradient norm means AdamW skipped the step
    if (!Number.isFinite((await res.gradNorm.data())[0])) skipped++
    if (s % 50 === 0 || s === STEPS - 1) process.stdout.write(`${ffn.padEnd(9)} step ${String(s).padStart(4)}  loss ${losses[s].toFixed(4)}\n`)
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  const { acc, loops } = await evaluate(m, batch(rng(12345), 2000), 2000)
  return { name: ffn, params: m.numParameters(), losses, acc, loops, seconds, skipped }
}

function smooth(a: number[], k = 10): number[] {
  return a.map((_, i) => {
    const s = a.slice(Math.max(0, i - k + 1), i + 1)
    return s.reduce((x, y) => x + y, 0) / s.length
  })
}

function svg(runs: Run[]): string {
  const W = 760, H = 320, pad = 50, colors = ['#1f77b4', '#d62728']
  const maxL = Math.max(...runs.flatMap((r) => r.losses.slice(5)))
  const px = (i: number) => pad + (i / (STEPS - 1)) * (W / 2 - pad - 10)
  const py = (v: number) => H - pad - (v / maxL) * (H - 2 * pad)
  let s = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">\n`
  s += `<rect width="${W}" height="${H}" fill="white"/>\n<text x="${pad}" y="20">training loss (10-step mean)</text>\n`
  s += `<line x1="${pad}" y1="${H - pad}" x2="${W / 2 - 10}" y2="${H - pad}" stroke="black"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${H - pad}" stroke="black"/>\n`
  s += `<text x="${pad}" y="${H - pad + 16}">0</text><text x="${W / 2 - 40}" y="${H - pad + 16}">${STEPS}</text><text x="10" y="${pad + 4}">${maxL.toFixed(2)}</text><text x="30" y="${H - pad}">0</text>\n`
  runs.forEach((r, k) => {
    const pts = smooth(r.losses).map((v, i) => `${px(i).toFixed(1)},${py(Math.min(v, maxL)).toFixed(1)}`).join(' ')
    s += `<polyline fill="none" stroke="${colors[k]}" stroke-width="1.5" points="${pts}"/>\n`
    s += `<text x="${W / 2 - 160}" y="${40 + 16 * k}" fill="${colors[k]}">${r.name} (${r.params} params)</text>\n`
  })
  const ax = W / 2 + 40, aw = W / 2 - 70
  const bx = (i: number) => ax + (i / (SEQ - 1)) * aw
  const by = (v: number) => H - pad - v * (H - 2 * pad)
  s += `<text x="${ax}" y="20">held-out accuracy by position (= chain length)</text>\n`
  s += `<line x1="${ax}" y1="${H - pad}" x2="${ax + aw}" y2="${H - pad}" stroke="black"/><line x1="${ax}" y1="${pad}" x2="${ax}" y2="${H - pad}" stroke="black"/>\n`
  s += `<text x="${ax - 20}" y="${pad + 4}">1</text><text x="${ax - 20}" y="${H - pad}">0</text><text x="${ax}" y="${H - pad + 16}">1</text><text x="${ax + aw - 10}" y="${H - pad + 16}">${SEQ}</text>\n`
  s += `<line x1="${ax}" y1="${by(1 / P)}" x2="${ax + aw}" y2="${by(1 / P)}" stroke="#999" stroke-dasharray="4"/><text x="${ax + aw - 40}" y="${by(1 / P) - 4}" fill="#999">chance</text>\n`
  runs.forEach((r, k) => {
    const pts = r.acc.map((v, i) => `${bx(i).toFixed(1)},${by(v).toFixed(1)}`).join(' ')
    s += `<polyline fill="none" stroke="${colors[k]}" stroke-width="1.5" points="${pts}"/>\n`
  })
  return s + '</svg>\n'
}

async function main() {
  console.log(`task: v_i = (3 v_(i-1) + a_i) mod ${P}, ${SEQ} tokens, batch ${BATCH}, ${STEPS} steps per model, loop noise ${NOISE}, temperature ${TEMPERATURE}, seed ${SEED}`)
  const runs = [await train('dense'), await train('versatile')]
  console.log('\nmodel      params   final loss (mean of last 20)  train s   held-out accuracy by position 1..' + SEQ + '   mean')
  for (const r of runs) {
    const last = r.losses.slice(-20).reduce((a, b) => a + b, 0) / 20
    const mean = r.acc.reduce((a, b) => a + b, 0) / r.acc.length
    console.log(`${r.name.padEnd(10)} ${String(r.params).padStart(6)}   ${last.toFixed(4).padStart(8)}                      ${r.seconds.toFixed(1).padStart(6)}   ${r.acc.map((a) => a.toFixed(2)).join(' ')}   ${mean.toFixed(3)}`)
    if (r.skipped) console.log(`${''.padEnd(10)} ${r.skipped} step(s) skipped for a non-finite gradient norm`)
    if (r.loops.length) console.log(`${''.padEnd(10)} mean loops per token at inference, by layer: ${r.loops.map((l) => l.toFixed(2)).join(', ')}`)
  }
  mkdirSync(path.dirname(OUT), { recursive: true })
  writeFileSync(OUT, svg(runs))
  console.log(`chart: ${OUT}`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
