// CUDA VersatileFFN against our dense FFN and against PyTorch running the straightforward
// algorithm (bench/torch_cuda.py) on the same GPU: paper 354M shapes (D=1024, I=4096, N=8, K=2,
// L=4), bfloat16 weights, T from 4096 to 16384. Inference forward and training step (fwd+bwd).
// "ideal" is the ratio of docs/SPEC.md's FLOP counts: the time VersatileFFN would take at the dense
// FFN's FLOP rate in the same run.
//   node bench/cuda-ffn.js [--tokens 4096,8192,16384] [--json]
import { DenseFFN, Tensor, VersatileFFN, randn } from '../lib/index'
import { arg, requireGpu, timeMs, torchYardstick } from './cuda-util'

requireGpu('cuda-ffn')
const D = 1024, I = 4096, N = 8, K = 2, L = 4, E = I / N
const tokens = arg('tokens', '4096,8192,16384').split(',').map(Number)
const json = process.argv.includes('--json')

async function main() {
  const torch = torchYardstick(['ffn', '--tokens', tokens.join(',')])
  const dense = new DenseFFN({ dModel: D, hidden: I, dtype: 'bfloat16', device: 'cuda', seed: 1 })
  const vffn = new VersatileFFN({ dModel: D, hidden: I, experts: N, topK: K, maxDepth: L, dtype: 'bfloat16', device: 'cuda', seed: 1 })
  const rows = []
  for (const T of tokens) {
    const x = randn([T, D], { seed: T }).to('cuda')
    const dy = randn([T, D], { seed: T + 1, std: 1e-3 }).to('cuda')
    const step = (m: DenseFFN | VersatileFFN) => () => {
      const rec = (m as VersatileFFN).forward(x, { train: true })
      const dx: Tensor = (m as VersatileFFN).backward(rec, dy)
      dx.dispose()
      rec.y.dispose()
      if ('dispose' in rec.stats) (rec.stats as { dispose(): void }).dispose()
      ;(rec as { auxLoss?: Tensor }).auxLoss?.dispose()
    }
    const infer = (m: DenseFFN | VersatileFFN) => () => {
      const o = (m as VersatileFFN).forward(x)
      o.y.dispose()
      if ('dispose' in o.stats) (o.stats as { dispose(): void }).dispose()
    }
    // the loop counts this model chose, for the FLOP accounting of inference
    const probe = vffn.forward(x)
    const loops = await probe.stats.loops.intData()
    probe.y.dispose()
    probe.stats.dispose()
    let loopSum = 0, widthTokens = 0
    for (const c of loops) {
      loopSum += c
      if (c < L) widthTokens++
    }
    const denseFlops = 6 * D * I * T
    const inferFlops = 6 * D * I * loopSum + 6 * D * E * K * widthTokens
    const trainFlops = 3 * (6 * D * I * L + 6 * D * E * K) * T // fwd + bwd ≈ 3× forward
    const m = {
      denseFwd: await timeMs(infer(dense), 5, 3),
      vInfer: await timeMs(infer(vffn), 5, 3),
      denseTrain: await timeMs(step(dense), 5, 2),
      vTrain: await timeMs(step(vffn), 5, 2),
    }
    const ref = (c: string) => Number(torch.rows?.find((r) => r.T === T && r.case === c)?.ms ?? NaN)
    rows.push({
      T, ...m, meanLoops: loopSum / T,
      idealInferMs: (m.denseFwd * inferFlops) / denseFlops, idealTrainMs: (m.denseTrain * trainFlops) / (3 * denseFlops),
      torchInferMs: ref('versatile inference'), torchTrainMs: ref('versatile train step'),
    })
    x.dispose()
    dy.dispose()
  }
  if (json) return console.log(JSON.stringify({ bench: 'cuda-ffn', gpu: torch.gpu, torch: torch.torch, torchError: torch.error, rows }))
  console.log(`# VersatileFFN on ${torch.gpu ?? 'GPU'}, bf16 weights; yardstick torch ${torch.torch ?? `unavailable (${torch.error})`}`)
  console.log('| T | case | ours ms | ideal ms | ours/ideal | torch ms | torch/ours |')
  console.log('|---|---|---|---|---|---|---|')
  for (const r of rows) {
    console.log(`| ${r.T} | inference (mean loops ${r.meanLoops.toFixed(2)}) | ${r.vInfer.toFixed(2)} | ${r.idealInferMs.toFixed(2)} | ${(r.vInfer / r.idealInferMs).toFixed(2)} | ${r.torchInferMs.toFixed(2)} | ${(r.torchInferMs / r.vInfer).toFixed(2)} |`)
    console.log(`| ${r.T} | train step | ${r.vTrain.toFixed(2)} | ${r.idealTrainMs.toFixed(2)} | ${(r.vTrain / r.idealTrainMs).toFixed(2)} | ${r.torchTrainMs.toFixed(2)} | ${(r.torchTrainMs / r.vTrain).toFixed(2)} |`)
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
