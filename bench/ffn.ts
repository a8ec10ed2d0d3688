// CPU benchmark of the dense FFN and VersatileFFN at the paper's 354M shapes (D=1024, I=4096,
// N=8, K=2, L=4): time (median), GFLOP/s on the FLOPs actually done (docs/SPEC.md's accounting), the
// ratio to ideal (those FLOPs at the dense FFN's GFLOP/s in the same run), peak training memory.
//   npx ts-node --transpile-only bench/ffn.ts [--threads 2] [--tokens 256,1024] [--reps 5] [--dtype float32|bfloat16] [--json]
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { DenseFFN, Tensor, VersatileFFN, device, getNumThreads, randn, setNumThreads, _native } from '../lib/index'

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def
}
const threads = Number(arg('threads', '2'))
const reps = Number(arg('reps', '5'))
const tokens = arg('tokens', '256,1024').split(',').map(Number)
const json = process.argv.includes('--json')
const dtype = arg('dtype', 'float32') as 'float32' | 'bfloat16'  // weight dtype
const D = 1024, I = 4096, N = 8, K = 2, L = 4, E = I / N
const log = (s: string) => { if (!json) console.log(s) }
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const cpu = device('cpu')

const vmHWM = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024

// loops uniform over 1..L: loop-head rows pick coordinates 0..L-1, token t gets coordinate t mod L
function uniformDepth(ffn: VersatileFFN, x: Tensor, T: number): Promise<Tensor> {
  const w = new Float32Array(L * D)
  for (let j = 0; j < L; j++) w[j * D + j] = 10
  ffn.loadStateDict({ ...ffn.stateDict(), 'depth_predictor.weight': w })
  return x.data().then((v) => {
    for (let t = 0; t < T; t++) for (let j = 0; j < L; j++) v[t * D + j] = j === t % L ? 3 : 0
    const out = Tensor._alloc([T, D], 'float32', cpu)
    _native.write(out, v)
    return out
  })
}

// peak memory of one training step, measured in a fresh process: peak RSS during the step minus
// RSS before it (weights, their gradients and the input already allocated)
async function memoryChild(T: number, uniform: boolean) {
  setNumThreads(threads)
  const vffn = new VersatileFFN({ dModel: D, hidden: I, experts: N, topK: K, maxDepth: L, seed: 1, dtype })
  let x = randn([T, D], { seed: 7 })
  if (uniform) x = await uniformDepth(vffn, x, T)
  const dy = randn([T, D], { seed: 8, std: 1e-3 })
  await cpu.sync()
  const rss0 = Number(/VmRSS:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024
  const tr = vffn.forward(x, { train: true, step: 0, noise: 'none' })
  await tr.y.data()
  const live = cpu.memory().live
  const dx = vffn.backward(tr, dy)
  await dx.data()
  console.log(JSON.stringify({ peak: vmHWM() - rss0, live }))
}

function measureMemory(T: number, uniform: boolean): { peak: number } {
  const out = execFileSync(process.execPath, [...process.execArgv, process.argv[1], '--mem', String(T), uniform ? 'uniform' : 'random', '--threads', String(threads), '--dtype', dtype], { env: process.env }).toString()
  return JSON.parse(out.trim().split('\n').pop()!)
}

// --dump-check FILE: a small VersatileFFN's weights, input, outputs and gradients as JSON, for
// bench/torch_reference.py --check FILE (the yardstick must compute the same function)
async function dumpCheck(file: string) {
  const c = { D: 32, I: 128, N: 8, K: 2, L: 4, T: 37, step: 12000 }
  const m = new VersatileFFN({ dModel: c.D, hidden: c.I, experts: c.N, topK: c.K, maxDepth: c.L, balanceLossWeight: 0, seed: 5 })
  const weights: Record<string, number[]> = {}
  for (const [name, p] of m.namedParameters()) {
    // wider than the 0.02 init, so routing, depth and the FFN terms all matter
    const v = await randn(p.shape, { seed: name.length + 100, std: name === 'ff_norm.weight' ? 0.3 : 0.15 }).data()
    if (name === 'ff_norm.weight') v.forEach((a, i) => (v[i] = 1 + a))
    weights[name] = Array.from(v)
    m.loadStateDict({ ...m.stateDict(), [name]: v })
  }
  const x = randn([c.T, c.D], { seed: 1 }), dy = randn([c.T, c.D], { seed: 2 })
  const inf = m.forward(x)
  const tr = m.forward(x, { train: true, step: c.step, noise: 'none' })
  const yTrain = Array.from(await tr.y.data())
  const dx = m.backward(tr, dy)
  const grads: Record<string, number[]> = {}
  for (const [name, g] of Object.entries(m.grads)) grads[name] = Array.from(await g.data())
  const out = {
    ...c, tau: tr.tau, weights, x: Array.from(await x.data()), dy: Array.from(await dy.data()),
    yInfer: Array.from(await inf.y.data()), loops: Array.from(await inf.stats.loops.data()), yTrain,
    dx: Array.from(await dx.data()), grads,
  }
  require('node:fs').writeFileSync(file, JSON.stringify(out))
}

async function main() {
  const dump = process.argv.indexOf('--dump-check')
  if (dump >= 0) return dumpCheck(process.argv[dump + 1])
  const mem = process.argv.indexOf('--mem')
  if (mem >= 0) return memoryChild(Number(process.argv[mem + 1]), process.argv[mem + 2] === 'uniform')
  setNumThreads(threads)
  const rows: Record<string, unknown>[] = []
  log(`# ffn bench: D=${D} I=${I} N=${N} K=${K} L=${L} E=${E}, ${getNumThreads()} threads, weights ${dtype}, ${cpus()[0].model}, gemm ${_native.kernelInfo().gemm}`)
  log('| T | case | ms (median) | CPU ms / thread | GFLOP | GFLOP/s | × dense | × ideal | × ideal (CPU time) | notes |')
  log('|---|---|---|---|---|---|---|---|---|---|')
  for (const T of tokens) {
    const dense = new DenseFFN({ dModel: D, hidden: I, seed: 1, dtype })
    const vRand = new VersatileFFN({ dModel: D, hidden: I, experts: N, topK: K, maxDepth: L, seed: 1, dtype })
    const vUni = new VersatileFFN({ dModel: D, hidden: I, experts: N, topK: K, maxDepth: L, seed: 1, dtype })
    const x = randn([T, D], { seed: 7 })
    const xu = await uniformDepth(vUni, x, T)
    const dy = randn([T, D], { seed: 8, std: 1e-3 })

    interface Case { name: string; flops: number; ref?: string; notes: string; run: () => Promise<void>; ms: number[]; cpu?: number[] }
    const cases: Case[] = [
      { name: 'dense FFN forward', flops: 6 * D * I * T, notes: '', ms: [],
        run: async () => { const o = dense.forward(x); await o.y.data(); o.y.dispose() } },
      { name: 'dense FFN train fwd+bwd', flops: 18 * D * I * T, notes: '', ms: [],
        run: async () => {
          const tr = dense.forward(x, { train: true })
          const dx = dense.backward(tr, dy)
          await dx.data()
          tr.y.dispose(); dx.dispose()
        } },
    ]
    for (const [m, xi, label] of [[vRand, x, 'random-init head'], [vUni, xu, 'loops uniform 1..4']] as const) {
      const o = m.forward(xi)
      const loops = Array.from(await o.stats.loops.data())
      o.y.dispose(); o.stats.dispose()
      const hist = Array.from({ length: L }, (_, j) => loops.filter((v) => v === j + 1).length).join('/')
      // inference: the loops each token ran, the width path where λ > 0
      cases.push({ name: `versatile inference, ${label}`, ref: 'dense FFN forward', ms: [], notes: `loops ${hist}`,
        flops: loops.reduce((a, c) => a + 6 * D * I * c + (c < L ? 6 * D * E * K : 0), 0),
        run: async () => { const r = m.forward(xi); await r.y.data(); r.y.dispose(); r.stats.dispose() } })
      // training (noise off, so the loops are the ones above): forward runs all L loops and the width
      // path for every token; backward stops each token at its own depth (2× the forward FLOPs of the
      // loops it ran, and of the width path where λ > 0)
      const fwd = T * (6 * D * I * L + 6 * D * E * K)
      const bwd = loops.reduce((a, c) => a + 12 * D * I * c + (c < L ? 12 * D * E * K : 0), 0)
      const { peak } = measureMemory(T, m === vUni)
      cases.push({ name: `versatile train fwd+bwd, ${label}`, ref: 'dense FFN train fwd+bwd', ms: [], flops: fwd + bwd,
        notes: `loops ${hist}; peak memory of the step ${(peak / 2 ** 20).toFixed(0)} MiB`,
        run: async () => {
          const tr = m.forward(xi, { train: true, step: 0, noise: 'none' })
          const dx = m.backward(tr, dy)
          await dx.data()
          dx.dispose(); tr.y.dispose(); tr.stats.dispose(); tr.auxLoss.dispose()
        } })
    }
    // rounds over all cases, so a load change on a shared machine hits every case alike
    for (const c of cases) await c.run()
    for (let r = 0; r < reps; r++)
      for (const c of cases) {
        const t0 = process.hrtime.bigint(), c0 = process.cpuUsage()
        await c.run()
        c.ms.push(Number(process.hrtime.bigint() - t0) / 1e6)
        const cu = process.cpuUsage(c0)
        ;(c.cpu ??= []).push((cu.user + cu.system) / 1e3 / threads)
      }
    // × ideal: time over (FLOPs at the reference case's GFLOP/s), on wall time and on CPU time per thread
    // (the latter is steadier when other processes share the cores)
    const gfOf = (c: Case, key: 'ms' | 'cpu') => c.flops / median(c[key]!) / 1e6
    for (const c of cases) {
      const ms = median(c.ms), cpuMs = median(c.cpu!), gf = gfOf(c, 'ms')
      const refCase = cases.find((r) => r.name === c.ref)
      const vsIdeal = refCase ? ms / (c.flops / gfOf(refCase, 'ms') / 1e6) : 1
      const vsIdealCpu = refCase ? cpuMs / (c.flops / gfOf(refCase, 'cpu') / 1e6) : 1
      const vsDense = refCase ? ms / median(refCase.ms) : 1
      rows.push({ T, case: c.name, ms, cpuMs, gflop: c.flops / 1e9, gflops: gf, vsDense, vsIdeal, vsIdealCpu, notes: c.notes })
      log(`| ${T} | ${c.name} | ${ms.toFixed(1)} | ${cpuMs.toFixed(1)} | ${(c.flops / 1e9).toFixed(2)} | ${gf.toFixed(1)} | ${vsDense.toFixed(2)} | ${vsIdeal.toFixed(3)} | ${vsIdealCpu.toFixed(3)} | ${c.notes} |`)
    }
    for (const t of [x, dy, xu]) t.dispose()
    dense.dispose(); vRand.dispose(); vUni.dispose()
  }
  if (json) console.log(JSON.stringify({ threads, dtype, D, I, N, K, L, E, rows }, null, 1))
}

main().catch((e) => { console.error(e); process.exit(1) })
