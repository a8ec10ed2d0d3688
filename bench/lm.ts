// Training throughput of the language model on CPU, VersatileFFN against the dense FFN in one
// run: one transformer block (forward + backward) and the whole 354M-shaped model (train step:
// forward, loss, backward, clip, AdamW) with as many layers as asked (default all 15).
//   npm run bench:lm [-- --threads 2 --seq 256 --batch 1 --layers 15 --reps 2 --json]
import { randn, setNumThreads, tensor, TransformerLM, AdamW, trainStep, CONFIGS } from '../lib/index'

const args = process.argv.slice(2)
const num = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : dflt
}
const threads = num('threads', 2)
const S = num('seq', 256)
const B = num('batch', 1)
const layers = num('layers', 15)
const reps = num('reps', 2)
const json = args.includes('--json')
setNumThreads(threads)
const cfg = CONFIGS['354M']
const T = B * S

// wall seconds and process CPU seconds per thread, per rep: on a shared machine the second is steadier
interface Timing {
  s: number
  cpu: number
}
async function time(fn: () => Promise<void>): Promise<Timing> {
  await fn() // warm-up: first-touch allocation, thread start
  const t0 = process.hrtime.bigint()
  const c0 = process.cpuUsage()
  for (let i = 0; i < reps; i++) await fn()
  const c = process.cpuUsage(c0)
  return { s: Number(process.hrtime.bigint() - t0) / 1e9 / reps, cpu: (c.user + c.system) / 1e6 / threads / reps }
}
const fmt = (t: Timing) => `${(T / t.s).toFixed(0)} tok/s (${t.s.toFixed(2)} s, CPU/thread ${t.cpu.toFixed(2)} s)`

async function blockRun(ffn: 'dense' | 'versatile'): Promise<Timing> {
  const m = new TransformerLM({ ...cfg, nLayers: 1, vocabSize: 16, ffn, maxSeqLen: S })
  const blk = m.blocks[0]
  const x = randn([T, cfg.dModel], { seed: 1 }), dy = randn([T, cfg.dModel], { seed: 2, std: 1e-3 })
  let step = 0
  const s = await time(async () => {
    const r = blk.forward(x, B, S, { train: true, step: step++ })
    const dx = blk.backward(r.saved!, dy)
    await dx.data()
  })
  m.dispose()
  return s
}

async function modelRun(ffn: 'dense' | 'versatile'): Promise<{ t: Timing; params: number }> {
  const m = new TransformerLM({ ...cfg, nLayers: layers, ffn, maxSeqLen: S })
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-4 })
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919) % cfg.vocabSize)
  const tg = Int32Array.from({ length: T }, (_, i) => (i * 104729 + 1) % cfg.vocabSize)
  const x = tensor(ids, [B, S], { dtype: 'int32' }), y = tensor(tg, [B, S], { dtype: 'int32' })
  const t = await time(async () => {
    const r = trainStep(m, opt, x, y)
    await r.loss.data()
  })
  const params = m.numParameters()
  opt.dispose()
  m.dispose()
  return { t, params }
}

async function main() {
  const rows: Record<string, unknown>[] = []
  const say = (s: string) => json || console.log(s)
  say(`354M shapes (D=${cfg.dModel}, I=${cfg.hidden}, H=${cfg.nHeads}, V=${cfg.vocabSize}, N=8, K=2, L=4), ${B}x${S} tokens, ${threads} threads, ${reps} reps after a warm-up`)
  const bd = await blockRun('dense'), bv = await blockRun('versatile')
  rows.push({ what: 'block fwd+bwd', dense: bd, versatile: bv, ratio_wall: bv.s / bd.s, ratio_cpu: bv.cpu / bd.cpu })
  say(`one block, forward+backward:  dense ${fmt(bd)}   versatile ${fmt(bv)}   versatile/dense time ${(bv.s / bd.s).toFixed(2)}x (CPU ${(bv.cpu / bd.cpu).toFixed(2)}x)`)
  const md = await modelRun('dense'), mv = await modelRun('versatile')
  rows.push({ what: `model train step, ${layers} layers`, dense: md.t, versatile: mv.t, ratio_wall: mv.t.s / md.t.s, ratio_cpu: mv.t.cpu / md.t.cpu, dense_params: md.params, versatile_params: mv.params })
  say(`model, ${layers} layers (${(md.params / 1e6).toFixed(1)}M / ${(mv.params / 1e6).toFixed(1)}M params), train step:  dense ${fmt(md.t)}   versatile ${fmt(mv.t)}   versatile/dense time ${(mv.t.s / md.t.s).toFixed(2)}x (CPU ${(mv.t.cpu / md.t.cpu).toFixed(2)}x)`)
  // docs/SPEC.md accounting: a training step is ~3x the forward; the FFN forward costs 6·D·I (dense)
  // and 6·D·I·L + 6·D·E·K (versatile) per token, so the FFN alone predicts this ratio
  const D = cfg.dModel, I = cfg.hidden, E = I / 8
  const attn = 8 * D * D + 2 * S * D // projections 2·4D², scores and values over S/2 keys on average
  const ideal = (attn + 6 * D * I * 4 + 6 * D * E * 2) / (attn + 6 * D * I)
  say(`expected block ratio from FLOPs (attention + FFN, per token): ${ideal.toFixed(2)}x`)
  if (json) console.log(JSON.stringify({ shapes: { ...cfg, layers, B, S, threads }, rows, idealBlockRatio: ideal }, null, 1))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
