// The run the resume test repeats in two processes: a tiny VersatileFFN model, its optimizer, a
// cosine schedule and a deterministic stream of batches indexed by the data position.
import { AdamW, TransformerLM, TransformerLMOptions, tensor, trainStep } from '../../lib/index'

export const CONFIG: TransformerLMOptions = { vocabSize: 29, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, maxSeqLen: 8, experts: 4, topK: 2, maxDepth: 3, seed: 9, balanceLossWeight: 1e-2 }
export const SCHEDULE = { lr: 1e-2, warmupSteps: 2, totalSteps: 6 }
const B = 4, S = 6

function rng(seed: number) {
  let s = seed >>> 0
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32)
}

/** The batch at data position k: tokens [B, S] and targets (some ignored) as host values. */
export function batch(k: number): { tokens: Int32Array; targets: Int32Array } {
  const r = rng(1000 + k)
  const tokens = Int32Array.from({ length: B * S }, () => Math.floor(r() * CONFIG.vocabSize))
  const targets = Int32Array.from({ length: B * S }, () => (r() < 0.2 ? -100 : Math.floor(r() * CONFIG.vocabSize)))
  return { tokens, targets }
}

export function setup(): { model: TransformerLM; opt: AdamW } {
  const model = new TransformerLM(CONFIG)
  return { model, opt: new AdamW(model.parameters(), model.gradients(), { lr: SCHEDULE.lr, eps: 1e-7 }) }
}

/** Runs the steps at data positions [from, to) with Gumbel noise and accumulation; returns each loss's float32 bits. */
export async function steps(model: TransformerLM, opt: AdamW, from: number, to: number): Promise<number[]> {
  const bits: number[] = []
  for (let k = from; k < to; k++) {
    const { tokens, targets } = batch(k)
    const r = trainStep(model, opt, tensor(tokens, [B, S], { dtype: 'int32' }), targets, { schedule: SCHEDULE, accumulate: 2 })
    const st = await r.status
    if (!st.ok) throw st.error
    bits.push(new Uint32Array((await r.loss.data()).buffer)[0])
    for (const t of [r.loss, r.gradNorm, ...r.auxLoss]) t.dispose()
  }
  return bits
}
