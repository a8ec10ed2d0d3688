// Trains the tiny VersatileFFN language model on a synthetic task and prints the loss: each
// sequence counts upward from a random start (token i+1 follows token i), which a model learns fast.
// Run: npx ts-node --transpile-only examples/train-small.ts [steps]
import { AdamW, TransformerLM, tensor, trainStep } from 'versatile-ffn'

async function main(): Promise<void> {
  const steps = Number(process.argv[2] ?? 300)
  const B = 8, S = 16
  const model = new TransformerLM({ ...TransformerLM.config('tiny'), ffn: 'versatile', seed: 1 })
  const V = model.config.vocabSize
  const opt = new AdamW(model.parameters(), model.gradients(), { lr: 3e-3 })
  const schedule = { lr: 3e-3, warmupSteps: Math.min(20, steps), totalSteps: steps }
  let seed = 12345
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32)
  const losses: number[] = []
  for (let step = 0; step < steps; step++) {
    const toks = new Int32Array(B * S), tgts = new Int32Array(B * S)
    for (let b = 0; b < B; b++) {
      const start = Math.floor(rand() * V)
      for (let s = 0; s < S; s++) {
        toks[b * S + s] = (start + s) % V
        tgts[b * S + s] = (start + s + 1) % V
      }
    }
    const tokens = tensor(toks, [B, S]), targets = tensor(tgts, [B, S])
    const r = trainStep(model, opt, tokens, targets, { schedule })
    const [loss] = await r.loss.data()
    losses.push(loss)
    if (step % 50 === 0 || step === steps - 1) console.log(`step ${step} loss ${loss.toFixed(4)}`)
    for (const t of [tokens, targets, r.loss, r.gradNorm, ...r.auxLoss]) t.dispose()
  }
  console.log(`first loss ${losses[0].toFixed(4)} final loss ${losses[losses.length - 1].toFixed(4)}`)
  const [cont] = await model.generate([[10, 11, 12]], { maxNewTokens: 5 })
  console.log(`greedy continuation of 10 11 12: ${cont.join(' ')}`)
  opt.dispose()
  model.dispose()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
