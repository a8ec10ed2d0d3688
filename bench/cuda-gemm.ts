// CUDA GEMM throughput against PyTorch (cuBLAS) on the same GPU, bfloat16 operands and output,
// at the FFN's shapes of the paper's 354M model: [T, D]·[2I, D]ᵀ (up+gate) and [T, I]·[D, I]ᵀ
// (down), T from 4096 to 16384. Prints TFLOP/s, torch's, and the ratio; --json for one JSON line.
// Then the backward GEMMs of the same layers beside their forward (the goal: within 1.3x of the
// forward's TFLOP/s): dX = dY·W (W read MN-major), dW += dYᵀ·X (both operands MN-major) in
// bf16 x bf16 (bf16 saved activations) and float32 x float32 (tf32, float32 activations), and the
// router's weight gradient drᵀ·x (M = 8 experts, K = T: split-K). VFFN_CUDA_GEMM=staged times the
// old register-staged path; --torch 0 skips the yardstick, --forward 0 the forward rows.
//   node bench/cuda-gemm.js [--tokens 4096,8192,16384] [--json] [--torch 0] [--forward 0]
import { matmul, randn, empty, Tensor } from '../lib/index'
import { arg, requireGpu, timeMs, torchYardstick } from './cuda-util'

requireGpu('cuda-gemm')
const D = 1024, I = 4096, EXPERTS = 8
const tokens = arg('tokens', '4096,8192,16384').split(',').map(Number)
const json = process.argv.includes('--json')
const withTorch = arg('torch', '1') !== '0'
const withForward = arg('forward', '1') !== '0'
const path = process.env.VFFN_CUDA_GEMM || 'auto'
const tflopsOf = (M: number, N: number, K: number, ms: number) => (2 * M * N * K) / ms / 1e9

// one layer y = x·Wᵀ (W [N, K]) at T tokens: forward, dX = dY·W, dW += dYᵀ·X in bf16 and float32
async function backwardRows(T: number) {
  const out = []
  const layers: [string, number, number][] = [['up+gate', 2 * I, D], ['down', D, I], ['router', EXPERTS, D]]
  for (const [layer, N, K] of layers) {
    const row: Record<string, number | string> = { T, layer, M: T, N, K }
    for (const dt of ['bfloat16', 'float32'] as const) {
      const x = randn([T, K], { seed: T + K }).to('cuda', dt)
      const w = randn([N, K], { seed: N * 3 + K }).to('cuda', dt)
      const dy = randn([T, N], { seed: T * 5 + N }).to('cuda', dt)
      const y = empty([T, N], { device: 'cuda', dtype: dt })
      const dx = empty([T, K], { device: 'cuda' })
      const dw = randn([N, K], { seed: 11 }).to('cuda')
      const tag = dt === 'bfloat16' ? 'bf16' : 'f32'
      const time = async (fn: () => void, M: number, NN: number, KK: number) => tflopsOf(M, NN, KK, await timeMs(fn))
      row[`fwd_${tag}`] = await time(() => matmul(x, w, { transposeB: true, out: y }), T, N, K)
      row[`dx_${tag}`] = await time(() => matmul(dy, w, { out: dx }), T, K, N)
      row[`dw_${tag}`] = await time(() => matmul(dy, x, { transposeA: true, out: dw, beta: 1 }), N, K, T)
      for (const v of [x, w, dy, y, dx, dw] as Tensor[]) v.dispose()
    }
    out.push(row)
  }
  return out
}

async function main() {
  const shapes: [number, number, number][] = []
  for (const T of tokens) shapes.push([T, 2 * I, D], [T, D, I])
  const torch = withTorch && withForward ? torchYardstick(['gemm', '--shapes', shapes.map((s) => s.join('x')).join(',')]) : { error: 'not asked (--torch 0)' } as ReturnType<typeof torchYardstick>
  const rows = []
  for (const [M, N, K] of withForward ? shapes : []) {
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
  const backward = []
  for (const T of tokens) backward.push(...(await backwardRows(T)))
  if (json) return console.log(JSON.stringify({ bench: 'cuda-gemm', path, gpu: torch.gpu, torch: torch.torch, torchError: torch.error, rows, backward }))
  if (rows.length) {
    console.log(`# bf16 GEMM, ${torch.gpu ?? 'GPU'}; yardstick: torch ${torch.torch ?? `unavailable (${torch.error})`}`)
    console.log('| M | N | K | ours ms | ours TFLOP/s | torch TFLOP/s | ours/torch |')
    console.log('|---|---|---|---|---|---|---|')
    for (const r of rows)
      console.log(`| ${r.M} | ${r.N} | ${r.K} | ${r.ms.toFixed(3)} | ${r.tflops.toFixed(1)} | ${r.torchTflops?.toFixed(1) ?? '-'} | ${r.ratio?.toFixed(2) ?? '-'} |`)
  }
  console.log(`\n# forward and backward GEMMs of y = x·Wᵀ, TFLOP/s (VFFN_CUDA_GEMM=${path}); fwd/dX, fwd/dW: the goal is <= 1.3`)
  console.log('| T | layer | N | K | fwd bf16 | dX bf16 | dW bf16 | fwd/dX | fwd/dW | fwd f32 | dX f32 | dW f32 | fwd/dW f32 |')
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  const f = (v: unknown) => Number(v).toFixed(1), q = (a: unknown, b: unknown) => (Number(a) / Number(b)).toFixed(2)
  for (const r of backward)
    console.log(`| ${r.T} | ${r.layer} | ${r.N} | ${r.K} | ${f(r.fwd_bf16)} | ${f(r.dx_bf16)} | ${f(r.dw_bf16)} | ${q(r.fwd_bf16, r.dx_bf16)} | ${q(r.fwd_bf16, r.dw_bf16)} | ${f(r.fwd_f32)} | ${f(r.dx_f32)} | ${f(r.dw_f32)} | ${q(r.fwd_f32, r.dw_f32)} |`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
