// The batch-1 product y = x W^T with float32 and with bfloat16 weights, side by side, for the
// shapes of a decode step at 354M; copies of W add up to about 512 MB (TOTAL=bytes to change it:
// 16e6 keeps them in this machine's last-level cache, as `small`'s 24 MiB nearly are), so W
// streams from memory as in a step of a model that does not fit the caches. Prints µs per
// product, GB/s of W read per dtype and the time ratio bf16 / f32 (bytes alone would give 0.5).
// Run: npx ts-node --transpile-only bench/gemv-dtype.ts [M] [KxN,KxN,...]
import { _native, matmul, tensor } from '../lib/index'

async function main(): Promise<void> {
  const M = Number(process.argv[2] ?? 1)
  const shapes = (process.argv[3] ?? '1024x3072,1024x1024,1024x4096,4096x1024,1024x50304').split(',').map((s) => s.split('x').map(Number))
  for (const [K, N] of shapes) {
    const x = tensor(Float32Array.from({ length: M * K }, (_, i) => Math.sin(i)), [M, K])
    const y = tensor(new Float32Array(M * N), [M, N])
    const copies = Math.ceil(Number(process.env.TOTAL ?? 512e6) / (K * N * 4))
    const graphs: Record<string, number> = {}
    const all = [x, y]
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const ws = Array.from({ length: copies }, (_, j) => tensor(Float32Array.from({ length: K * N }, (_, i) => Math.cos(i + j)), [N, K], { dtype }))
      all.push(...ws)
      graphs[dtype] = _native.graphRecord(() => {
        for (const w of ws) matmul(x, w, { out: y, transposeB: true })
      })
    }
    const ts: Record<string, number[]> = { float32: [], bfloat16: [] }
    for (let r = 0; r < 7; r++)
      for (const d of ['float32', 'bfloat16']) {
        _native.graphReplay(graphs[d])
        await _native.sync(0, 0)
        const t0 = performance.now()
        for (let i = 0; i < 3; i++) _native.graphReplay(graphs[d])
        await _native.sync(0, 0)
        ts[d].push((performance.now() - t0) / 3 / copies)
      }
    const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]
    const cell = (d: string, b: number) => `${d} ${(med(ts[d]) * 1000).toFixed(1)} µs ${((K * N * b) / med(ts[d]) / 1e6).toFixed(1)} GB/s`
    console.log(`M ${M} K ${K} N ${N}: ${cell('float32', 4)}, ${cell('bfloat16', 2)}, bf16/f32 time ${(med(ts.bfloat16) / med(ts.float32)).toFixed(2)}`)
    for (const g of Object.values(graphs)) _native.graphRelease(g)
    for (const t of all) t.dispose()
  }
}
void main()
