// GEMM throughput at the FFN shapes, side by side with OpenBLAS sgemm on the same machine and
// against the measured FMA peak. OpenBLAS is only a yardstick here: the package never links it.
//   npm run bench:gemm [-- --threads 2 --reps 7 --warmup 2 --shapes 64,512,2048 --decode 1,4 --json --no-openblas]
// (--shapes none / --decode none skip the throughput table / the decoding table)
// per shape, our runs and then OpenBLAS's, each after warm-up runs and a pause; on a shared
// machine the numbers move with other load, so compare them within one run.
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { randn, empty, matmul, setNumThreads, getNumThreads, device, _native, Tensor, DenseFFN } from '../lib/index'

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def
}
const flag = (name: string) => process.argv.includes(`--${name}`)

const threads = Number(arg('threads', '2'))
const reps = Number(arg('reps', '7'))
const warmup = Number(arg('warmup', '2'))
const list = (s: string) => (s === 'none' ? [] : s.split(',').map(Number))
const Ts = list(arg('shapes', '64,512,2048'))
const decodeMs = list(arg('decode', '1,4'))
const json = flag('json')
const useOpenblas = !flag('no-openblas')
const log = (s: string) => { if (!json) console.log(s) }
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const pause = () => new Promise((r) => setTimeout(r, 300))

// compiles a C helper from bench/ into a temporary folder
const work = mkdtempSync(join(tmpdir(), 'vffn-bench-'))
function compile(src: string, out: string, flags: string[]): string | null {
  try {
    execFileSync('cc', ['-O2', join(__dirname, src), '-o', join(work, out), ...flags], { stdio: 'pipe' })
    return join(work, out)
  } catch (e) {
    log(`(could not build ${src}: ${String((e as { stderr?: Buffer }).stderr ?? e).split('\n')[0]})`)
    return null
  }
}

function fmaPeak(n: number): number {
  const exe = compile('fma_peak.c', 'fma_peak', ['-mavx2', '-mfma', '-pthread'])
  if (!exe) return NaN
  return Math.max(...[0, 1].map(() => Number(execFileSync(exe, [String(n)]).toString().trim())))
}

// the OpenBLAS harness as a server: one timed call per request line
class OpenBlas {
  core = ''
  private waiting: ((line: string) => void)[] = []
  private proc
  constructor(exe: string) {
    const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads) }
    // the machine may pin a core type / L2 size for other tools; let OpenBLAS detect its own here
    delete env.OPENBLAS_CORETYPE
    delete env.OPENBLAS_L2_SIZE
    this.proc = spawn(exe, [], { env, stdio: ['pipe', 'pipe', 'inherit'] })
    createInterface({ input: this.proc.stdout }).on('line', (l) => this.waiting.shift()?.(l))
  }
  private next(): Promise<string> {
    return new Promise((resolve) => this.waiting.push(resolve))
  }
  async start(): Promise<void> {
    const [name, n] = (await this.next()).split(' ')
    this.core = `${name}, ${n} threads`
  }
  // [wall seconds, process CPU seconds]
  async run(M: number, N: number, K: number, tb: boolean): Promise<[number, number]> {
    const reply = this.next()
    this.proc.stdin.write(`${M} ${N} ${K} ${tb ? 1 : 0}\n`)
    const [w, c] = (await reply).split(' ').map(Number)
    return [w, c]
  }
  close(): void {
    this.proc.stdin.end()
  }
}

async function main(): Promise<void> {
  const before = getNumThreads()
  setNumThreads(threads)
  const exe = useOpenblas ? compile('openblas_sgemm.c', 'openblas_sgemm', ['-lopenblas']) : null
  const ob = exe ? new OpenBlas(exe) : null
  if (ob) await ob.start()
  const peak = fmaPeak(threads)
  const kernel = _native.kernelInfo().gemm
  log(`machine: ${cpus()[0]?.model ?? '?'} (${cpus().length} cpus), ${threads} threads, kernel ${kernel}`)
  log(`measured FMA peak: ${peak.toFixed(1)} GFLOP/s (${threads} threads, 8-wide FMA, per-thread CPU time)`)
  log(`median of ${reps} runs after ${warmup} warm-up runs; B stored [N, K] (weights [out, in]) or [K, N]`)
  log(`load average at start: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
  const cpuCol = threads === 1  // with one thread, CPU time measures the code without the machine's other load
  const head = 'shape                      B layout  ours GF/s  %peak  OpenBLAS GF/s  %peak  ours/OpenBLAS' +
    (cpuCol ? '  cpu-time: ours  OpenBLAS  ratio' : '')
  log(head)
  log('-'.repeat(head.length))
  const rows: Record<string, unknown>[] = []
  const cpu = device('cpu')
  for (const [K, N] of [[1024, 8192], [4096, 1024]])
    for (const T of Ts)
      for (const tb of [true, false]) {
        const a = randn([T, K], { seed: 1 })
        const b = randn(tb ? [N, K] : [K, N], { seed: 2 })
        const c = empty([T, N])
        const mine: number[] = [], mineCpu: number[] = [], theirs: number[] = [], theirsCpu: number[] = []
        for (let r = -warmup; r < reps; r++) {
          await cpu.sync()
          const c0 = process.cpuUsage()
          const t0 = process.hrtime.bigint()
          matmul(a, b, { transposeB: tb, out: c })
          await cpu.sync()
          const wall = Number(process.hrtime.bigint() - t0) / 1e9
          const used = process.cpuUsage(c0)
          if (r >= 0) mine.push(wall), mineCpu.push((used.user + used.system) / 1e6)
        }
        // each side runs back to back (as a layer's GEMMs do) after a pause: OpenBLAS's helper
        // threads keep spinning a while after a call, and must not compete with our next runs
        await pause()
        for (let r = -warmup; ob && r < reps; r++) {
          const [w, u] = await ob.run(T, N, K, tb)
          if (r >= 0) theirs.push(w), theirsCpu.push(u)
        }
        if (ob) await pause()
        if (!ob) theirs.push(NaN), theirsCpu.push(NaN)
        for (const x of [a, b, c] as Tensor[]) x.dispose()
        const gf = (s: number) => (2 * T * N * K) / s / 1e9
        const g = gf(median(mine)), o = gf(median(theirs))
        const gc = gf(median(mineCpu)), oc = gf(median(theirsCpu))
        const shape = `[${T}x${K}]x[${K}x${N}]`
        rows.push({ M: T, N, K, transposeB: tb, ours: g, openblas: o, ratio: g / o, oursBest: gf(Math.min(...mine)),
          openblasBest: gf(Math.min(...theirs)), ...(cpuCol ? { oursCpu: gc, openblasCpu: oc } : {}) })
        log(`${shape.padEnd(26)} ${(tb ? '[N,K]' : '[K,N]').padEnd(9)} ${g.toFixed(1).padStart(9)} ${(100 * g / peak).toFixed(0).padStart(5)}%` +
          ` ${o.toFixed(1).padStart(14)} ${(100 * o / peak).toFixed(0).padStart(5)}% ${(g / o).toFixed(2).padStart(14)}` +
          (cpuCol ? ` ${gc.toFixed(1).padStart(15)} ${oc.toFixed(1).padStart(9)} ${(gc / oc).toFixed(2).padStart(6)}` : ''))
      }
  // decoding: M tokens against weights stored [out, in]; the time is bounded by reading the
  // weights once (GB/s of weight traffic), not by FMAs. then one dense FFN forward (D=1024,
  // I=4096) for a single token: its three GEMMs read 48 MiB of float32 weights
  const decode: Record<string, unknown>[] = []
  if (decodeMs.length) {
    const dh = 'decode shape               ours ms  weight GB/s  GFLOP/s  OpenBLAS ms  weight GB/s  GFLOP/s  ours/OpenBLAS'
    log('')
    log(dh)
    log('-'.repeat(dh.length))
  }
  for (const [K, N] of decodeMs.length ? [[1024, 8192], [4096, 1024]] : [])
    for (const M of decodeMs) {
      const a = randn([M, K], { seed: 1 }), b = randn([N, K], { seed: 2 }), c = empty([M, N])
      const mine: number[] = [], theirs: number[] = []
      for (let r = -warmup; r < 3 * reps; r++) {
        await cpu.sync()
        const t0 = process.hrtime.bigint()
        matmul(a, b, { transposeB: true, out: c })
        await cpu.sync()
        if (r >= 0) mine.push(Number(process.hrtime.bigint() - t0) / 1e9)
      }
      await pause()
      for (let r = -warmup; ob && r < 3 * reps; r++) {
        const [w] = await ob.run(M, N, K, true)
        if (r >= 0) theirs.push(w)
      }
      if (ob) await pause()
      else theirs.push(NaN)
      for (const x of [a, b, c] as Tensor[]) x.dispose()
      const g = median(mine), o = median(theirs)
      const gbs = (s: number) => (4 * N * K) / s / 1e9, gfs = (s: number) => (2 * M * N * K) / s / 1e9
      decode.push({ M, N, K, transposeB: true, oursMs: 1e3 * g, oursGBs: gbs(g), oursGflops: gfs(g), openblasMs: 1e3 * o,
        openblasGBs: gbs(o), openblasGflops: gfs(o) })
      log(`${`[${M}x${K}]x[${K}x${N}]^T`.padEnd(26)} ${(1e3 * g).toFixed(3).padStart(7)} ${gbs(g).toFixed(1).padStart(12)} ${gfs(g).toFixed(1).padStart(8)}` +
        ` ${(1e3 * o).toFixed(3).padStart(12)} ${gbs(o).toFixed(1).padStart(12)} ${gfs(o).toFixed(1).padStart(8)} ${(o / g).toFixed(2).padStart(14)}`)
    }
  let ffnMs = NaN
  if (decodeMs.length) {
    const ffn = new DenseFFN({ dModel: 1024, hidden: 4096, seed: 1 })
    const x = randn([1, 1024], { seed: 7 })
    const ts: number[] = []
    for (let r = -warmup; r < 3 * reps; r++) {
      await cpu.sync()
      const t0 = process.hrtime.bigint()
      const o = ffn.forward(x)
      await o.y.data()
      if (r >= 0) ts.push(Number(process.hrtime.bigint() - t0) / 1e6)
      o.y.dispose()
    }
    ffnMs = median(ts)
    log(`dense FFN forward, D=1024 I=4096, 1 token: ${ffnMs.toFixed(2)} ms (median of ${3 * reps}; ${(3 * 4 * 1024 * 4096 / ffnMs / 1e6).toFixed(1)} GB/s of weights)`)
  }
  log(`load average at end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
  if (ob) log(`OpenBLAS core type: ${ob.core}`)
  else if (useOpenblas) log('OpenBLAS not measured (install libopenblas-dev to compare)')
  if (json) console.log(JSON.stringify({ kernel, threads, reps, warmup, peak, openblasCore: ob?.core ?? null, loadavg: loadavg(), rows, decode, ffnDecodeMs: ffnMs }, null, 1))
  ob?.close()
  setNumThreads(before)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
