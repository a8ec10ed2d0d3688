// Quickstart: tensors, a queued matmul, reading values back, and a weight slice as a free view.
// Run: npx ts-node --transpile-only examples/quickstart.ts
import { cuda, device, matmul, randn } from 'versatile-ffn'

async function main(): Promise<void> {
  const T = 8, D = 16, O = 12
  const x = randn([T, D], { seed: 1 })              // float32 on the CPU
  const w = randn([O, D], { seed: 2, std: 0.5 })    // a weight stored [out, in]
  const h = matmul(x, w, { transposeB: true })      // queued: returns at once
  const rows = w.rows(4, 8)                         // rows 4..7 of w: a view, no copy
  const part = matmul(x, rows, { transposeB: true })
  console.log(h, part)                              // Tensor(float32 [8, 12] cpu) ...
  const [hv, pv, xv, wv] = await Promise.all([h.data(), part.data(), x.data(), w.data()])

  // the same product written out, to see what matmul computed
  let maxDiff = 0
  for (let t = 0; t < T; t++)
    for (let o = 0; o < O; o++) {
      let s = 0
      for (let d = 0; d < D; d++) s += xv[t * D + d] * wv[o * D + d]
      maxDiff = Math.max(maxDiff, Math.abs(s - hv[t * O + o]))
      if (o >= 4 && o < 8) maxDiff = Math.max(maxDiff, Math.abs(s - pv[t * 4 + o - 4]))
    }
  console.log(`h[0, 0..3] = ${Array.from(hv.slice(0, 4), (v) => v.toFixed(4)).join(' ')}`)
  console.log(`max abs difference from a plain loop: ${maxDiff.toExponential(2)}`)
  console.log(`cuda: ${cuda.available() ? 'available' : cuda.reason()}`)
  for (const t of [x, w, rows, h, part]) t.dispose()  // a view holds its own reference to w's memory
  await device('cpu').sync()  // frees land once the stream has let go of them
  console.log(`live bytes after dispose: ${device('cpu').memory().live}`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
