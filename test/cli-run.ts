// A tiny real bench run: the JSON schema, positive numbers, and FLOP counts equal to docs/SPEC.md's
// accounting recomputed here from the shapes and the loop counts (forced, so known in advance).
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { main } from '../lib/cli'
import { parseBenchArgs } from '../lib/bench/args'
import { collect } from '../lib/bench/run'

const root = path.join(__dirname, '..')
// D, I, N, K, L, E, T: small and ragged (T prime, E below I/N so the slices are strided)
const D = 24, I = 80, N = 4, K = 2, L = 3, E = 16, T = 37
const SHAPE = ['--config', 'tiny', '--d-model', `${D}`, '--hidden', `${I}`, '--experts', `${N}`, '--top-k', `${K}`, '--max-depth', `${L}`, '--expert-hidden', `${E}`, '--tokens', `${T}`]
const FAST = ['--warmup', '1', '--repeat', '3', '--threads', '1']

function options(argv: string[]) {
  const p = parseBenchArgs(argv)
  if (p.help) throw new Error('help')
  return p.options
}
const quiet = { write: () => undefined, isTTY: false }

// docs/SPEC.md, written out again: per token 6·D·I per loop, 6·D·E·K for the width path
const loopF = 6 * D * I
const widthF = 6 * D * E * K

t.test('JSON schema and positive numbers', async (t) => {
  const out: string[] = []
  const chart = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-bench-')), 'chart.svg')
  const code = await main(['bench', '--json', '--chart', chart, '--device', 'cpu', '--depth', 'uniform', ...SHAPE, ...FAST], {
    stdout: { write: (s: string) => void out.push(s) },
    stderr: quiet,
  })
  t.equal(code, 0)
  const r = JSON.parse(out.join(''))
  t.equal(r.device, 'cpu')
  t.type(r.deviceInfo, 'string')
  t.equal(r.threads, 1)
  t.same(r.config, { name: 'tiny', label: 'tiny with D=24 I=80 N=4 L=3', dModel: D, hidden: I, experts: N, topK: K, maxDepth: L, expertHidden: E, tokens: T, dtype: 'float32', depth: 'uniform', warmup: 1, repeat: 3, seed: 1 })
  t.same(r.failed, [])
  t.same(r.cases.map((c: { name: string }) => c.name), ['dense.forward', 'dense.train', 'versatile.forward', 'versatile.train', 'moe.forward', 'moe.train', 'loops.forward', 'loops.train', 'authors.forward'])
  for (const c of r.cases) {
    t.match(c, { kind: /^(forward|train)$/, description: String, runs: 3, baseline: /^dense\.(forward|train)$/ }, c.name)
    for (const k of ['medianMs', 'minMs', 'maxMs', 'flops', 'usefulFlops', 'tflops', 'ratioToDense', 'ratioToIdeal', 'paramBytes'])
      t.ok(typeof c[k] === 'number' && c[k] > 0 && Number.isFinite(c[k]), `${c.name}.${k} = ${c[k]} is positive`)
    t.ok(c.peakActivationBytes >= 0, `${c.name}.peakActivationBytes`)
    t.ok(c.minMs <= c.medianMs && c.medianMs <= c.maxMs, `${c.name}: min <= median <= max`)
    t.equal(c.samplesMs.length, 3)
    t.ok(Math.abs(c.tflops - c.flops / (c.medianMs / 1e3) / 1e12) <= 1e-9 * c.tflops, `${c.name}: tflops = flops / median`)
    t.equal(c.baseline, c.kind === 'forward' ? 'dense.forward' : 'dense.train')
  }
  const byName = Object.fromEntries(r.cases.map((c: { name: string }) => [c.name, c]))
  t.equal(byName['dense.forward'].ratioToDense, 1)
  t.equal(byName['dense.train'].ratioToDense, 1)
  // lower bounds from the tensors each run must hold at once (float32): y; and y, h [T, 2I], rstd, dx
  t.ok(byName['dense.forward'].peakActivationBytes >= T * D * 4, 'dense.forward holds its output')
  t.ok(byName['dense.train'].peakActivationBytes >= T * (2 * D + 2 * I + 1) * 4, `dense.train holds y, h, rstd and dx: ${byName['dense.train'].peakActivationBytes}`)
  t.ok(byName['versatile.train'].peakActivationBytes >= T * L * 2 * I * 4, `versatile.train keeps every loop's h: ${byName['versatile.train'].peakActivationBytes}`)
  const svg = fs.readFileSync(chart, 'utf8')
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/)
  t.equal(svg.match(/<rect /g)?.length, 1 + 5 + 9, 'background, the colour legend and one bar per case')
  t.match(svg, /inference forward[\s\S]*training step/, 'forward and training cases in two panels')
  t.match(svg, /x ideal/, 'bars say their ratio to ideal')
  t.match(svg, /authors\.forward/)
})

t.test('FLOP counts follow docs/SPEC.md for every case, with depth fixed at 2 loops', async (t) => {
  const r = await collect(options(['--device', 'cpu', '--depth', 'fixed:2', ...SHAPE, ...FAST]), quiet)
  const c = Object.fromEntries(r.cases.map((x) => [x.name, x]))
  t.equal(c['dense.forward'].flops, T * loopF)
  t.equal(c['dense.train'].flops, 3 * T * loopF)
  // λ = (3 − 2)/3 > 0: every token runs 2 loops and the width path
  t.same(c['versatile.forward'].loopsHistogram, [0, T, 0])
  t.equal(c['versatile.forward'].widthTokens, T)
  t.equal(c['versatile.forward'].flops, T * (2 * loopF + widthF))
  t.equal(c['loops.forward'].flops, T * L * loopF)
  t.equal(c['loops.train'].flops, 3 * T * L * loopF)
  // the MoE at equal active parameters: K experts of width floor(I/K) per token
  t.equal(c['moe.forward'].flops, T * 6 * D * Math.floor(I / K) * K)
  t.equal(c['moe.train'].flops, 3 * T * 6 * D * Math.floor(I / K) * K)
  // the authors' strategy runs the deepest loop (2) and the width path for every token: same work here
  t.equal(c['authors.forward'].flops, T * (2 * loopF + widthF))
  t.equal(c['authors.forward'].usefulFlops, c['versatile.forward'].flops)
  // float32 sums in a different order (separate GEMMs per expert, scatter-adds): a few ulps of values near 1
  t.ok(c['authors.forward'].maxAbsDiffToVersatile! < 1e-4, `authors vs versatile: ${c['authors.forward'].maxAbsDiffToVersatile}`)
  // training: forward runs all L loops and the width path; backward walks each token's own loops, and
  // the width path of tokens with λ > 0 (not at the last loop); Gumbel noise may move a few tokens
  const h = c['versatile.train'].loopsHistogram!
  t.equal(h.reduce((a, b) => a + b, 0), T)
  const own = h.reduce((a, n, j) => a + n * (j + 1), 0)
  t.equal(c['versatile.train'].flops, T * (L * loopF + widthF) + 2 * (own * loopF + (T - h[L - 1]) * widthF))
  t.ok(h[1] >= T - 3, `the forced depth mostly survives the noise: ${h}`)
})

t.test('uniform and deep depth: FLOPs from the per-token loops and λ', async (t) => {
  // shares × 37 by largest remainder: uniform 12.33 each; deep 1/7, 2/7, 4/7 → 5.29, 10.57, 21.14
  for (const [depth, want] of [['uniform', [13, 12, 12]], ['deep', [5, 11, 21]]] as const) {
    const r = await collect(options(['--device', 'cpu', '--depth', depth, '--cases', 'versatile.forward,versatile.train,authors.forward', ...SHAPE, ...FAST]), quiet)
    const [v, tr, a] = r.cases
    const h = tr.loopsHistogram!
    const own = h.reduce((s, n, j) => s + n * (j + 1), 0)
    t.ok(h[L - 1] > 0, `${depth}: some training tokens at the last loop skip the width backward`)
    t.equal(tr.flops, T * (L * loopF + widthF) + 2 * (own * loopF + (T - h[L - 1]) * widthF), `${depth}: training step`)
    t.same(v.loopsHistogram, want, `${depth}: tokens per loop count`)
    // tokens at the last loop have λ = 0 and skip the width path
    t.equal(v.widthTokens, T - want[L - 1])
    const loopsSum = want.reduce((s, n, j) => s + n * (j + 1), 0)
    t.equal(v.flops, loopsSum * loopF + (T - want[L - 1]) * widthF, depth)
    t.equal(a.flops, T * (L * loopF + widthF), `${depth}: authors run the deepest loop (${L}) everywhere`)
    t.equal(a.usefulFlops, v.flops)
    t.ok(a.maxAbsDiffToVersatile! < 1e-4, `${depth}: authors vs versatile ${a.maxAbsDiffToVersatile}`) // as above
    t.equal(v.ratioToDense, null, 'no dense.forward in this run: no ratio')
  }
})

t.test('bfloat16 weights and random-init depth run; the table names what ran', async (t) => {
  const out: string[] = []
  const code = await main(['bench', '--device', 'cpu', '--dtype', 'bfloat16', '--cases', 'dense.forward,versatile.forward', ...SHAPE, ...FAST], {
    stdout: { write: (s: string) => void out.push(s) },
    stderr: quiet,
  })
  t.equal(code, 0)
  const text = out.join('')
  t.match(text, /versatile-ffn bench on cpu/)
  t.match(text, new RegExp(`D=${D} I=${I} N=${N} K=${K} E=${E} L=${L}, T=${T} tokens, bfloat16, depth random-init`))
  t.match(text, /dense\.forward +\d/)
  t.match(text, /versatile\.forward: loops per token 1:\d+% 2:\d+% 3:\d+%/)
})

t.test('as a child process: JSON on stdout, progress on stderr', async (t) => {
  const loader = process.execArgv.filter((a) => a.includes('typescript'))
  const r = spawnSync(process.execPath, [...loader, path.join(root, 'lib/cli.ts'), 'bench', '--json', '--cases', 'dense.forward', ...SHAPE, ...FAST], {
    encoding: 'utf8',
    env: process.env,
    timeout: 120_000,
  })
  t.equal(r.status, 0, r.stderr)
  const j = JSON.parse(r.stdout)
  t.equal(j.cases.length, 1)
  t.equal(j.cases[0].flops, T * loopF)
  t.match(r.stderr, /bench \[1\/1\] dense\.forward: ready/)
  t.match(r.stderr, /bench timed round 3\/3 done/)
})
