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

async function time(fn: () => Promise<void>): Promise<number> {
  await fn() // warm-up: first-touch allocation, thread start
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < reps; i++) await fn()
  return Number(process.hrtime.bigint() - t0) / 1e9 / reps
}

async function blockRun(ffn: 'dense' | 'versatile'): Promise<number> {
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

async function modelRun(ffn: 'dense' | 'versatile'): Promise<{ s: number; params: number }> {
  const m = new TransformerLM({ ...cfg, nLayers: layers, ffn, maxSeqLen: S })
  const opt = new AdamW(m.parameters(), m.gradients(), { lr: 1e-4 })
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919) % cfg.vocabSize)
  const tg = Int32Array.from({ length: T }, (_, i) => (i * 104729 + 1) % cfg.vocabSize)
  const x = tensor(ids, [B, S], { dtype: 'int32' }), y = tensor(tg, [B, S], { dtype: 'int32' })
  const s = await time(async () => {
    const r = trainStep(m, opt, x, y)
    await r.loss.data()
  })
  const params = m.numParameters()
  opt.dispose()
  m.dispose()
  return { s, params }
}

async function main() {
  const rows: Record<string, unknown>[] = []
  const say = (s: string) => json || console.log(s)
  say(`354M shapes (D=${cfg.dModel}, I=${cfg.hidden}, H=${cfg.nHeads}, V=${cfg.vocabSize}, N=8, K=2, L=4), ${B}x${S} tokens, ${threads} threads, ${reps} reps after a warm-up`)
  const bd = await blockRun('dense'), bv = await blockRun('versatile')
  rows.push({ what: 'block fwd+bwd', dense_s: bd, versatile_s: bv, dense_tok_s: T / bd, versatile_tok_s: T / bv, ratio: bv / bd })
  say(`one block, forward+backward:   dense ${(T / bd).toFixed(0)} tok/s (${(bd * 1e3).toFixed(0)} ms)   versatile ${(T / bv).toFixed(0)} tok/s (${(bv * 1e3).toFixed(0)} ms)   versatile/dense time ${(bv / bd).toFixed(2)}x`)
  const md = await modelRun('dense'), mv = await modelRun('versatile')
  rows.push({ what: `model train step, ${layers} layers`, dense_s: md.s, versatile_s: mv.s, dense_tok_s: T / md.s, versatile_tok_s: T / mv.s, ratio: mv.s / md.s, dense_params: md.params, versatile_params: mv.params })
  say(`model (${layers} layers, ${(md.params / 1e6).toFixed(0)}M / ${(mv.params / 1e6).toFixed(0)}M params), train step:   dense ${(T / md.s).toFixed(0)} tok/s (${md.s.toFixed(2)} s)   versatile ${(T / mv.s).toFixed(0)} tok/s (${mv.s.toFixed(2)} s)   versatile/dense time ${(mv.s / md.s).toFixed(2)}x`)
  // SPEC.md accounting: a training step is ~3x the forward; the FFN forward costs 6·D·I (dense)
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
