// The FFN modules on a [batch, sequence, D] input, with the routing statistics VersatileFFN reports:
// loops per token (early exit), λ, which experts were chosen, and a training step's balance loss.
// Run: npx ts-node --transpile-only examples/ffn-routing.ts [dModel] [batch] [seq]
import { DenseFFN, VersatileFFN, randn } from 'versatile-ffn'

async function main(): Promise<void> {
  const [D, B, S] = process.argv.slice(2).map(Number).concat([64, 4, 32].slice(process.argv.length - 2))
  const ffn = new VersatileFFN({ dModel: D, seed: 1 })   // hidden 4·D, N = 8, K = 2, L = 4, E = I/N
  const dense = new DenseFFN({ dModel: D, seed: 1 })
  console.log(`VersatileFFN D=${D} I=${ffn.hidden} N=${ffn.experts} K=${ffn.topK} L=${ffn.maxDepth} E=${ffn.expertHidden}`)
  // the default init (std 0.02) routes almost uniformly; larger heads make the choices visible
  for (const name of ['expert_gate.weight', 'depth_predictor.weight'] as const) {
    const p = ffn.params[name]
    const w = randn(p.shape, { seed: 7, std: 1 / Math.sqrt(D) })
    p.copy_(w)
    w.dispose()
  }

  const x = randn([B, S, D], { seed: 2 })
  const { y, stats } = ffn.forward(x)                // inference: each token stops after its own loops
  const d = dense.forward(x)
  console.log(`input ${x.shape.join('x')} -> versatile ${y.shape.join('x')}, dense ${d.y.shape.join('x')}`)
  const [loops, lambda, counts] = await Promise.all([stats.loops.data(), stats.lambda.data(), stats.expertCounts.data()])
  const T = B * S
  const hist = new Array<number>(ffn.maxDepth).fill(0)
  for (const l of loops) hist[l - 1]++
  console.log(`loops per token: ${hist.map((n, i) => `${i + 1}:${n}`).join(' ')} (of ${T} tokens)`)
  const width = lambda.filter((v) => v > 0).length
  console.log(`width path on ${width} of ${T} tokens; mean lambda ${(lambda.reduce((a, b) => a + b, 0) / T).toFixed(3)}`)
  console.log(`expert assignments: ${Array.from(counts).join(' ')} (sum ${counts.reduce((a, b) => a + b, 0)} = T·K = ${T * ffn.topK})`)

  // a training step: Gumbel noise, all loops, the balance loss; backward accumulates the gradients
  const tr = ffn.forward(x, { train: true, step: 0, seed: 3 })
  const dy = randn([B, S, D], { seed: 4 })
  const dx = ffn.backward(tr, dy)
  const [aux] = await tr.auxLoss.data()
  console.log(`training: tau ${tr.tau.toFixed(2)}, balance loss ${aux.toExponential(3)}, dx ${dx.shape.join('x')}`)
  console.log(`gradients: ${Object.keys(ffn.grads).join(', ')}`)

  for (const t of [x, y, d.y, dy, dx, tr.y, tr.auxLoss]) t.dispose()
  stats.dispose()
  tr.stats.dispose()
  ffn.dispose()
  dense.dispose()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
