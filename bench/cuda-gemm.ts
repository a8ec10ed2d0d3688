// CUDA GEMM throughput against PyTorch (cuBLAS) on the same GPU, bfloat16 operands and output,
// at the FFN's shapes of the paper's 354M model: [T, D]·[2I, D]ᵀ (up+gate) and [T, I]·[D, I]ᵀ
// (down), T from 4096 to 16384. Prints TFLOP/s, torch's, and the ratio; --json for one JSON line.
//   node bench/cuda-gemm.js [--tokens 4096,8192,16384] [--json]
import { matmul, randn, empty, _native } from '../lib/index'
import { arg, requireGpu, timeMs, torchYardstick } from './cuda-util'

requireGpu('cuda-gemm')
const D = 1024, I = 4096
const tokens = arg('tokens', '4096,8192,16384').split(',').map(Number)
const json = process.argv.includes('--json')

async function main() {
  const shapes: [number, number, number][] = []
  for (const T of tokens) shapes.push([T, 2 * I, D], [T, D, I])
  const torch = torchYardstick(['gemm', '--shapes', shapes.map((s) => s.join('x')).join(',')])
  const rows = []
  for (const [M, N, K] of shapes) {
    // weights stored [N, K] as in the layers (x·Wᵀ); random data, never zeros
    const a = randn([M, K], { seed: M + K }).to('cuda', 'bfloat16')
    const w = randn([N, K], { seed: N * 3 + K }).to('cuda', 'bfloat16')
    const c = empty([M, N], { device: 'cuda', dtype: 'bfloat16' })
    const ms = await timeMs(() => matmul(a, w, { transposeB: true, out: c }))
    const tflops = (2 * M * N * K) / ms / 1e9
    const ref = torch.rows?.find((r) => r.M === M && r.N === N && r.K === K)
    rows.push({ M, N, K, ms, tflops, torchTflops: ref ? Number(ref.tflops) : null, ratio: ref ? tflops / Number(ref.tflops) : null })
    for (const t of [a, w, c]) t.dispose()
  }
  if (json) return console.log(JSON.stringify({ bench: 'cuda-gemm', gpu: torch.gpu, torch: torch.torch, torchError: torch.error, rows }))
  console.log(`# bf16 GEMM, ${torch.gpu ?? 'GPU'}; yardstick: torch ${torch.torch ?? `unavailable (${torch.error})`}`)
  console.log('| M | N | K | ours ms | ours TFLOP/s | torch TFLOP/s | ours/torch |')
  console.log('|---|---|---|---|---|---|---|')
  for (const r of rows)
    console.log(`| ${r.M} | ${r.N} | ${r.K} | ${r.ms.toFixed(3)} | ${r.tflops.toFixed(1)} | ${r.torchTflops?.toFixed(1) ?? '-'} | ${r.ratio?.toFixed(2) ?? '-'} |`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
