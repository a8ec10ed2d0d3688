// The Gumbel temperature as an input: stretchedTemperature (the paper's curve over a run's length),
// `tau` on VersatileFFN's and the model's training forward, trainStep's `temperature`, and
// `versatile-ffn train --temperature stretched`, each against the formula written out here.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { AdamW, TransformerLM, VersatileFFN, gumbelTemperature, stretchedTemperature, tensor, trainStep } from '../lib/index'
import { writeBin } from './helpers/token-files'
import { mulberry32 } from '../lib/random'

// τ = max(5·0.99984^(step·s/N), 0.1), s = ln(0.02)/ln(0.99984): written out again
const stretched = (step: number, N: number) => Math.max(5 * 0.99984 ** ((Math.min(step, N) * (Math.log(0.02) / Math.log(0.99984))) / N), 0.1)

t.test('stretchedTemperature: 5 at the first step, the floor 0.1 at the last, the paper curve in between', async (t) => {
  for (const N of [1, 7, 100, 24449, 100000])
    for (const k of [0, 1, Math.floor(N / 3), N - 1, N, N + 5]) t.ok(Math.abs(stretchedTemperature(k, N) - stretched(k, N)) <= 1e-12, `τ(${k}; ${N}) = ${stretched(k, N)}`)
  t.equal(stretchedTemperature(0, 500), 5)
  t.ok(Math.abs(stretchedTemperature(500, 500) - 0.1) < 1e-12, 'reaches 0.1 at the run length')
  // at the paper's own length the two schedules agree to rounding
  const L = Math.log(0.02) / Math.log(0.99984)
  t.ok(Math.abs(stretchedTemperature(1000, Math.round(L)) - gumbelTemperature(1000)) < 1e-4, 'equals the per-step schedule over ≈24,449 steps')
  for (const [k, N] of [[-1, 10], [1.5, 10], [1, 0], [1, 2.5], [NaN, 10]] as const)
    t.throws(() => stretchedTemperature(k, N), { code: 'ERR_ARGUMENT' }, `(${k}, ${N}) rejected`)
})

const xs = (T: number, D: number, seed: number) => {
  const r = mulberry32(seed)
  return tensor(Float32Array.from({ length: T * D }, () => 2 * r() - 1), [T, D])
}

t.test('VersatileFFN: tau = gumbelTemperature(step) is the default, bit for bit; another tau is used', async (t) => {
  const f = new VersatileFFN({ dModel: 16, hidden: 64, experts: 4, topK: 2, maxDepth: 3, seed: 5 })
  const x = xs(40, 16, 1)
  const a = f.forward(x, { train: true, step: 300 })
  const b = f.forward(x, { train: true, step: 300, tau: gumbelTemperature(300) })
  const c = f.forward(x, { train: true, step: 300, tau: 0.2 })
  t.equal(a.tau, gumbelTemperature(300))
  t.equal(c.tau, 0.2, 'the record carries the given τ')
  const [ya, yb, yc] = await Promise.all([a.y.data(), b.y.data(), c.y.data()])
  t.same(Array.from(yb), Array.from(ya), 'same τ, same output')
  // the forward uses the hard choice, which τ does not move; the loop head's gradient goes through
  // p = softmax((z + g)/τ) (docs/SPEC.md), so τ shows there
  t.same(Array.from(yc), Array.from(ya), 'the output takes the hard loop choice, the same at any τ')
  const dy = xs(40, 16, 2)
  const headGrad = async (rec: typeof a) => {
    f.zeroGrad()
    f.backward(rec, dy, { retain: true }).dispose()
    return Array.from(await f.grads['depth_predictor.weight'].data())
  }
  const ga = await headGrad(a), gb = await headGrad(b), gc = await headGrad(c)
  t.same(gb, ga, 'same τ, same loop-head gradient')
  t.notSame(gc, ga, 'another τ, another loop-head gradient')
  dy.dispose()
  t.throws(() => f.forward(x, { tau: 0.5 }), { code: 'ERR_ARGUMENT', message: /tau: only for training/ })
  for (const bad of [0, -1, NaN, Infinity, '1'])
    t.throws(() => f.forward(x, { train: true, tau: bad as never }), { code: 'ERR_ARGUMENT', message: /tau/ }, `tau ${String(bad)} rejected`)
  for (const r of [a, b, c]) {
    r.y.dispose()
    r.stats.dispose()
    r.auxLoss.dispose()
    r.dispose()
  }
  x.dispose()
  f.dispose()
})

t.test('trainStep: temperature gumbelTemperature(step) equals the default; another temperature trains differently', async (t) => {
  const cfg = { vocabSize: 32, dModel: 16, nLayers: 2, nHeads: 2, hidden: 32, experts: 4, topK: 2, maxDepth: 3, seed: 9 }
  const r = mulberry32(3)
  const tok = tensor(Int32Array.from({ length: 4 * 8 }, () => Math.floor(r() * 32)), [4, 8], { dtype: 'int32' })
  const tgt = Int32Array.from({ length: 4 * 8 }, () => Math.floor(r() * 32))
  const run = async (temp?: (step: number) => number) => {
    const m = new TransformerLM(cfg)
    const o = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
    const losses: number[] = []
    for (let s = 0; s < 3; s++) {
      const res = trainStep(m, o, tok, tgt, temp ? { temperature: temp(o.step) } : {})
      losses.push((await res.loss.data())[0])
      res.loss.dispose()
    }
    m.dispose()
    o.dispose()
    return losses
  }
  const base = await run()
  // recompute 'block' reruns each block's forward in backward: with the same τ, or the gradients differ
  const viaBlock = async (recompute: 'none' | 'block') => {
    const m = new TransformerLM({ ...cfg, recompute })
    const o = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
    const losses: number[] = []
    for (let s = 0; s < 3; s++) {
      const res = trainStep(m, o, tok, tgt, { temperature: 0.25 + s })
      losses.push((await res.loss.data())[0])
      res.loss.dispose()
    }
    const w = Array.from(await m.parameters().get('transformer.blocks.0.depth_predictor.weight')!.data())
    m.dispose()
    o.dispose()
    return { losses, w }
  }
  t.same(await viaBlock('block'), await viaBlock('none'), "recompute 'block' replays the given temperature: the same losses and loop-head weights")
  t.same(await run(gumbelTemperature), base, 'the per-step schedule given explicitly: the same losses, bit for bit')
  const other = await run((s) => stretchedTemperature(s, 3))
  t.equal(other[0], base[0], 'step 0: τ = 5 in both')
  t.not(other[2], base[2], 'later steps: the stretched τ changes the losses')
  const m = new TransformerLM(cfg)
  const o = new AdamW(m.parameters(), m.gradients(), { lr: 1e-2 })
  t.throws(() => trainStep(m, o, tok, tgt, { temperature: 0 }), { code: 'ERR_ARGUMENT', message: /temperature/ })
  t.equal(o.step, 0, 'a refused step changes nothing')
  t.throws(() => m.forward(tok, { tau: 1 }), { code: 'ERR_ARGUMENT', message: /tau: only for training/ })
  m.dispose()
  o.dispose()
  tok.dispose()
})

t.test('versatile-ffn train --temperature stretched logs and uses the stretched τ; refused for other FFNs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-temp-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const r = mulberry32(11)
  const data = path.join(dir, 'train.bin')
  writeBin(data, Buffer.from(Array.from({ length: 6000 }, () => 97 + Math.floor(r() * 20))))
  const cli = (args: string[]) => spawnSync(process.execPath, [path.join(__dirname, '..', 'dist', 'cli.js'), 'train', ...args], { encoding: 'utf8', timeout: 120_000 })
  const steps = 6
  const p = cli(['--data', data, '--batch', '2', '--seq', '16', '--steps', `${steps}`, '--temperature', 'stretched', '--out', path.join(dir, 'run')])
  t.equal(p.status, 0, p.stderr.slice(-500))
  const lines = fs.readFileSync(path.join(dir, 'run', 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.type === 'train')
  t.equal(lines.length, steps)
  lines.forEach((l, k) => t.ok(Math.abs(l.tau - stretched(k, steps)) < 1e-12, `step ${k}: τ ${l.tau} = ${stretched(k, steps)}`))
  const q = cli(['--data', data, '--ffn', 'dense', '--temperature', 'stretched', '--out', path.join(dir, 'dense')])
  t.equal(q.status, 2)
  t.match(q.stderr, /--temperature: only for --ffn versatile/)
  t.notOk(fs.existsSync(path.join(dir, 'dense')), 'nothing written')
  const w = cli(['--data', data, '--temperature', 'linear', '--out', path.join(dir, 'x')])
  t.equal(w.status, 2)
  t.match(w.stderr, /--temperature: expected one of paper, stretched/)
})
