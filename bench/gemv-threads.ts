// The small-M GEMM (decoding) on 1 and 2 threads, side by side: y = x W^T for the shapes of a
// decode step, replayed from a recording over copies of W that add up to about 24 MB (so, as in a
// step, W comes from the last-level cache, not L1 or L2), thread counts alternating. Prints µs per
// product, GB/s of W read and the 2-thread/1-thread ratio.
// Run: npx ts-node --transpile-only bench/gemv-threads.ts [M] [KxN,KxN,...]
import { _native, matmul, setNumThreads, getNumThreads, tensor } from '../lib/index'

async function main(): Promise<void> {
  const M = Number(process.argv[2] ?? 1)
  const shapes = (process.argv[3] ?? '256x256,256x768,1024x256,256x2048,256x4096').split(',').map((s) => s.split('x').map(Number))
  const before = getNumThreads()
  for (const [K, N] of shapes) {
    const x = tensor(Float32Array.from({ length: M * K }, (_, i) => Math.sin(i)), [M, K])
    const copies = Math.ceil(24e6 / (K * N * 4))
    const ws = Array.from({ length: copies }, (_, j) => tensor(Float32Array.from({ length: K * N }, (_, i) => Math.cos(i + j)), [N, K]))
    const y = tensor(new Float32Array(M * N), [M, N])
    const g = _native.graphRecord(() => {
      for (const w of ws) matmul(x, w, { out: y, transposeB: true })
    })
    const ts: Record<number, number[]> = { 1: [], 2: [] }
    for (let r = 0; r < 9; r++)
      for (const th of [1, 2]) {
        setNumThreads(th)
        for (let i = 0; i < 5; i++) _native.graphReplay(g)
        await _native.sync(0, 0)
        const t0 = performance.now()
        for (let i = 0; i < 30; i++) _native.graphReplay(g)
        await _native.sync(0, 0)
        ts[th].push((performance.now() - t0) / 30 / copies)
      }
    const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]
    const cell = (th: number) => `${th} thread${th > 1 ? 's' : ''} ${(med(ts[th]) * 1000).toFixed(1)} µs ${((K * N * 4) / med(ts[th]) / 1e6).toFixed(1)} GB/s`
    console.log(`M ${M} K ${K} N ${N}: ${cell(1)}, ${cell(2)}, ratio ${(med(ts[2]) / med(ts[1])).toFixed(2)}`)
    _native.graphRelease(g)
    for (const t of [x, y, ...ws]) t.dispose()
  }
  setNumThreads(before)
}
void main()
