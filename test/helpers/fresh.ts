// fresh random test data on every CUDA test run (a new base each run), with the counter to print
// on a failure so the data can be drawn again
export function freshData(base: number): { fresh: (n: number, scale?: number) => Float32Array; readonly seed: number } {
  let seed = base + Math.floor(Math.random() * 1e6)
  return {
    fresh(n: number, scale = 1): Float32Array {
      let s = (seed++ * 2654435761) >>> 0
      const out = new Float32Array(n)
      for (let i = 0; i < n; i++) {
        s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0
        out[i] = ((s >>> 8) / 16777216 * 2 - 1) * scale
      }
      return out
    },
    get seed() {
      return seed
    },
  }
}
