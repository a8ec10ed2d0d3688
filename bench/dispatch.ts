// JS-thread cost of queuing one op: a native entry call (2x2 gemm, tensors passed as handle ids as
// lib/ passes them), the public matmul into a given output and allocating its output (then
// disposed), against the same op replayed from a recording of 100 of them (one graphReplay call
// per 100 ops). The CPU worker is kept busy by _debugSleep first, so the ops queue up and only the
// JS thread's side is timed; the queue drains between repetitions (its memory is then reused, as
// in a running program, instead of growing by every op of every repetition).
// Run: npx ts-node --transpile-only bench/dispatch.ts [direct|matmul|matmul-alloc|replay|both] [ops]
// Instruction counts, which do not depend on the machine's load: node bench/dispatch-icount.js
import { _native, matmul, tensor } from '../lib/index'

const PER_GRAPH = 100

async function main(): Promise<void> {
  const mode = process.argv[2] ?? 'both'
  const n = Number(process.argv[3] ?? 20000)
  const a = tensor(new Float32Array([1, 2, 3, 4]), [2, 2]), b = tensor(new Float32Array([5, 6, 7, 8]), [2, 2])
  const c = tensor(new Float32Array(4), [2, 2])
  const g = _native.graphRecord(() => {
    for (let i = 0; i < PER_GRAPH; i++) _native.gemm(c._id, a._id, b._id, false, false, 1, 0)
  })
  const run: Record<string, () => void> = {
    direct: () => {
      for (let i = 0; i < n; i++) _native.gemm(c._id, a._id, b._id, false, false, 1, 0)
    },
    matmul: () => {
      for (let i = 0; i < n; i++) matmul(a, b, { out: c })
    },
    'matmul-alloc': () => {
      for (let i = 0; i < n; i++) matmul(a, b).dispose()
    },
    replay: () => {
      for (let i = 0; i < n / PER_GRAPH; i++) _native.graphReplay(g)
    },
  }
  const modes = mode === 'both' ? ['direct', 'matmul', 'matmul-alloc', 'replay'] : [mode]
  const times: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m, []]))
  for (let rep = 0; rep < (mode === 'both' ? 5 : 1); rep++)
    for (const m of modes) {
      _native._debugSleep(0, 0, 600)
      const t0 = performance.now()
      run[m]()
      times[m].push(((performance.now() - t0) * 1000) / Math.max(n, 1))
      await _native.sync(0, 0)
    }
  const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]
  for (const m of modes) console.log(`${m.padEnd(13)} ${med(times[m]).toFixed(3)} µs of JS-thread time per queued op (median of ${times[m].length}, ${n} ops each)`)
  _native.graphRelease(g)
  for (const t of [a, b, c]) t.dispose()
}
void main()
