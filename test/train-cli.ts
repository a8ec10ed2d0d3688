// `versatile-ffn train` and `chart` end to end through the compiled bin (dist/cli.js), on a small
// generated English-like text read as bytes (ids < 256, the tiny config's vocabulary): the run
// folder's files, a falling loss, the log's numbers against formulas written out here, resume and
// Ctrl-C giving the same losses as a run that never stopped, and clean exit-code-2 errors.
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawn, spawnSync } from 'child_process'
import { TransformerLM, cuda, loadSafetensors } from '../lib/index'
import { main } from '../lib/cli'
import { writeBin } from './helpers/token-files'

const root = path.join(__dirname, '..')
const dist = path.join(root, 'dist/cli.js')
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-train-'))
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))

// the tests run the compiled bin: it must be built from the current sources
t.test('dist/cli.js is built from the current lib/train', async (t) => {
  t.ok(fs.existsSync(dist), 'dist/cli.js exists (npx tsc -p tsconfig.json)')
  const newest = Math.max(...fs.readdirSync(path.join(root, 'lib/train')).map((f) => fs.statSync(path.join(root, 'lib/train', f)).mtimeMs))
  t.ok(fs.statSync(path.join(root, 'dist/train/run.js')).mtimeMs >= newest, 'dist/train is newer than lib/train (npx tsc -p tsconfig.json)')
})

// sentences from a small grammar (mulberry32 picks): structure a tiny model learns within steps
function text(chars: number, seed: number): string {
  let a = seed >>> 0
  const r = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32
  }
  const pick = (w: string[]) => w[Math.floor(r() * w.length)]
  const subj = ['the cat', 'a dog', 'the old man', 'my sister', 'the bird'], verb = ['sees', 'likes', 'follows', 'finds'], obj = ['the ball', 'a tree', 'the river', 'some bread']
  let s = ''
  while (s.length < chars) s += `${pick(subj)} ${pick(verb)} ${pick(obj)}.${r() < 0.3 ? '\n' : ' '}`
  return s.slice(0, chars)
}
const train = path.join(dir, 'train.bin'), val = path.join(dir, 'val.bin')
writeBin(train, Buffer.from(text(30000, 1), 'latin1'))
writeBin(val, Buffer.from(text(4000, 2), 'latin1'))

const B = 4, S = 32
const BASE = ['--data', train, '--batch', `${B}`, '--seq', `${S}`, '--lr', '3e-3']

function cli(args: string[]) {
  return spawnSync(process.execPath, [dist, ...args], { encoding: 'utf8', env: process.env, timeout: 120_000 })
}
type Line = { type: string; step: number; loss: number; [k: string]: unknown }
const readLog = (d: string): Line[] => fs.readFileSync(path.join(d, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
const trainLines = (d: string) => readLog(d).filter((l) => l.type === 'train')
const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length

// docs/SPEC.md's schedule and temperature, written out again
function lrAt(step: number, lr: number, warmup: number, total: number): number {
  if (step < warmup) return (lr * (step + 1)) / warmup
  const p = Math.min(1, (step - warmup) / Math.max(1, total - warmup))
  return 0.1 * lr + 0.9 * lr * 0.5 * (1 + Math.cos(Math.PI * p))
}
const tauAt = (step: number) => Math.max(5 * 0.99984 ** step, 0.1)

t.test('a run: checkpoint, weights, log and chart; the loss falls; the log follows the schedule', async (t) => {
  const out = path.join(dir, 'run')
  const r = cli(['train', ...BASE, '--val', val, '--out', out, '--steps', '30', '--warmup', '4', '--eval-every', '10', '--chart'])
  t.equal(r.status, 0, r.stderr)
  for (const f of ['checkpoint.safetensors', 'model.safetensors', 'log.jsonl', 'loss.svg']) t.ok(fs.existsSync(path.join(out, f)), `${f} exists`)
  t.match(r.stdout, /step 30\/30, loss \d+\.\d+, val loss \d+\.\d+, checkpoint /)
  t.match(r.stderr, /train: step 30\/30 +loss \d+\.\d+ +\d+ tok\/s +lr \S+ +τ \d\.\d+ +loops \d\.\d+ +val \d+\.\d+ +ETA /, 'the progress line')

  const log = readLog(out)
  t.equal(log[0].type, 'start')
  t.equal((log[0] as { settings: { steps: number } }).settings.steps, 30)
  const tr = log.filter((l) => l.type === 'train')
  t.same(tr.map((l) => l.step), Array.from({ length: 30 }, (_, i) => i + 1), 'one line per step')
  tr.forEach((l) => {
    t.ok(Math.abs((l.lr as number) - lrAt(l.step - 1, 3e-3, 4, 30)) < 1e-12, `step ${l.step}: lr ${l.lr}`)
    t.ok(Math.abs((l.tau as number) - tauAt(l.step - 1)) < 1e-12, `step ${l.step}: τ ${l.tau}`)
    t.ok((l.loops as number) >= 1 && (l.loops as number) <= 4, `step ${l.step}: mean loops ${l.loops} in [1, 4]`)
    t.equal(l.tokens, l.step * B * S)
    t.ok((l.tokensPerSec as number) > 0 && (l.gradNorm as number) > 0 && (l.time as number) > 0)
  })
  for (let i = 1; i < tr.length; i++) t.ok((tr[i].time as number) > (tr[i - 1].time as number), 'time grows')
  const losses = tr.map((l) => l.loss)
  // uniform over 256 bytes is ln 256 = 5.55; the grammar's text has far fewer distinct bytes
  t.ok(Math.abs(losses[0] - Math.log(256)) < 0.5, `the first loss ${losses[0]} is near ln 256`)
  t.ok(mean(losses.slice(-5)) < mean(losses.slice(0, 5)) - 1, `the loss falls: ${mean(losses.slice(0, 5))} -> ${mean(losses.slice(-5))}`)
  const vals = log.filter((l) => l.type === 'val')
  t.same(vals.map((l) => l.step), [10, 20, 30])
  t.ok(vals[2].loss < vals[0].loss, `validation loss falls: ${vals.map((v) => v.loss)}`)
  vals.forEach((v) => t.ok(Math.abs((v.perplexity as number) - Math.exp(v.loss)) < 1e-9 * (v.perplexity as number)))
  t.same(log.filter((l) => l.type === 'checkpoint').map((l) => [l.step, l.reason]), [[30, 'end']])

  // the checkpoint: 30 optimizer steps, the run's settings and data position in its extra
  const { metadata } = await loadSafetensors(path.join(out, 'checkpoint.safetensors'))
  t.equal(JSON.parse(metadata['versatile-ffn.optimizer']).step, 30)
  const extra = JSON.parse(metadata['versatile-ffn.training']).extra
  t.equal(extra.tokens, 30 * B * S)
  t.equal(extra.position.index + extra.position.epoch * Math.floor((30000 - 1) / S), 30 * B, 'the loader moved one batch per step')

  const svg = fs.readFileSync(path.join(out, 'loss.svg'), 'utf8')
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/)
  t.equal(svg.match(/<polyline class="train"/g)?.length, 2, 'train loss against steps and against time')
  t.equal(svg.match(/<polyline class="val"/g)?.length, 2, 'validation loss against steps and against time')
  t.match(svg, />step</)
  t.match(svg, />training time \(s\)</)
  t.match(svg, />validation loss</)
  t.match(svg, />run</, 'the legend names the run')
  // the step panel's train polyline has one point per step
  t.equal(svg.match(/<polyline class="train"[^>]*points="([^"]*)"/)![1].split(' ').length, 30)

  // chart overlays runs: a dense run next to it
  const dense = path.join(dir, 'dense')
  const d = cli(['train', ...BASE, '--val', val, '--out', dense, '--steps', '10', '--ffn', 'dense'])
  t.equal(d.status, 0, d.stderr)
  const dl = trainLines(dense)
  t.ok(dl.every((l) => l.tau === null && l.loops === null), 'a dense run has no τ or loops')
  t.notMatch(d.stderr, /τ/)
  const both = path.join(dir, 'both.svg')
  const c = cli(['chart', out, dense, '--out', both])
  t.equal(c.status, 0, c.stderr)
  const svg2 = fs.readFileSync(both, 'utf8')
  t.equal(svg2.match(/<polyline class="train"/g)?.length, 4, 'two runs, two panels each')
  t.match(svg2, />run</)
  t.match(svg2, />dense</)

  // model.safetensors holds the weights alone, those of the checkpoint
  const m = await TransformerLM.fromFile(path.join(out, 'model.safetensors'))
  const ck = await loadSafetensors(path.join(out, 'checkpoint.safetensors'))
  for (const [n, p] of m.parameters()) t.same(await p.data(), ck.tensors.get(n)!.data, `model.safetensors: ${n}`)
  m.dispose()

  // continued pretraining from the dense run's folder: a VersatileFFN model over its weights
  const cont = path.join(dir, 'continued')
  const f = cli(['train', ...BASE, '--out', cont, '--steps', '3', '--from-dense', dense])
  t.equal(f.status, 0, f.stderr)
  const start = readLog(cont)[0] as unknown as { model: { ffn: string; vocabSize: number; dModel: number }; settings: { config: string } }
  t.equal(start.model.ffn, 'versatile')
  t.equal(start.settings.config, 'from-dense')
  const dm = await TransformerLM.fromFile(path.join(dense, 'model.safetensors'))
  const cm = await TransformerLM.fromFile(path.join(cont, 'model.safetensors'))
  t.equal(cm.config.dModel, dm.config.dModel)
  t.ok(cm.numParameters() > dm.numParameters(), 'the router and loop head are added')
  dm.dispose()
  cm.dispose()
  t.ok(trainLines(cont).every((l) => (l.loops as number) >= 1), 'it reports loops')
})

t.test('--stop-at then --resume gives the same losses and weights as not stopping', async (t) => {
  const args = [...BASE, '--steps', '12', '--accumulate', '2', '--val', val, '--eval-every', '4']
  const straight = path.join(dir, 'straight'), split = path.join(dir, 'split')
  t.equal(cli(['train', ...args, '--out', straight]).status, 0)
  const a = cli(['train', ...args, '--out', split, '--stop-at', '5'])
  t.equal(a.status, 0, a.stderr)
  t.same(trainLines(split).map((l) => l.step), [1, 2, 3, 4, 5])
  // into another folder (which gets the log up to the checkpoint), then in place: both from step 5
  const other = path.join(dir, 'other')
  const c = cli(['train', '--resume', split, '--out', other])
  t.equal(c.status, 0, c.stderr)
  const b = cli(['train', '--resume', split])
  t.equal(b.status, 0, b.stderr)
  const want = trainLines(straight).map((l) => l.loss), got = trainLines(split).map((l) => l.loss)
  t.equal(new Set(want).size, 12, 'every step has its own loss (a wrong step would show)')
  t.same(got, want, 'steps 6 to 12 after the resume give the losses of the straight run, exactly')
  t.same(trainLines(other).map((l) => l.loss), want, 'and resumed into another folder too')
  t.same(readLog(split).filter((l) => l.type === 'val').map((l) => [l.step, l.loss]), readLog(straight).filter((l) => l.type === 'val').map((l) => [l.step, l.loss]), 'and the same validation losses, on the same schedule')
  const x = await loadSafetensors(path.join(straight, 'checkpoint.safetensors')), y = await loadSafetensors(path.join(split, 'checkpoint.safetensors'))
  t.same([...y.tensors.keys()].sort(), [...x.tensors.keys()].sort())
  const differ = [...x.tensors].filter(([n, v]) => !Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength).equals(Buffer.from(y.tensors.get(n)!.data.buffer, y.tensors.get(n)!.data.byteOffset, y.tensors.get(n)!.data.byteLength)))
  t.same(differ.map(([n]) => n), [], 'every weight and moment equals the straight run, bit for bit')
  t.same(readLog(split).filter((l) => l.type === 'start').map((l) => [l.step, l.resumed]), [[0, false], [5, true]])

  // a finished run continues with a larger --steps: the schedule is stretched to it from there on
  const more = cli(['train', '--resume', straight, '--steps', '14'])
  t.equal(more.status, 0, more.stderr)
  const ext = trainLines(straight)
  t.same(ext.map((l) => l.step), Array.from({ length: 14 }, (_, i) => i + 1))
  t.same(ext.slice(0, 12).map((l) => l.loss), want, 'the first 12 steps are kept')
  // the run's warmup is a tenth of its first --steps (1 step); the cosine now ends at step 14
  for (const l of ext.slice(12)) t.ok(Math.abs((l.lr as number) - lrAt(l.step - 1, 3e-3, 1, 14)) < 1e-12, `step ${l.step}: lr ${l.lr}`)
})

t.test('Ctrl-C saves a checkpoint and exits with 130; resuming continues as if never stopped', async (t) => {
  const args = [...BASE, '--steps', '100000', '--warmup', '5']
  const out = path.join(dir, 'interrupted')
  const child = spawn(process.execPath, [dist, 'train', ...args, '--out', out], { env: process.env })
  let stderr = ''
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()))
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)))
  // interrupt once a few steps are logged
  for (let i = 0; i < 600; i++) {
    await new Promise((r) => setTimeout(r, 50))
    if (fs.existsSync(path.join(out, 'log.jsonl')) && fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8').split('"type":"train"').length > 4) break
  }
  child.kill('SIGINT')
  const code = await exited
  t.equal(code, 130, stderr)
  t.match(stderr, /interrupted; saving a checkpoint after the current step/)
  t.match(stderr, /continue with: versatile-ffn train --resume /)
  const log = readLog(out)
  const k = trainLines(out).length
  t.ok(k >= 4, `${k} steps ran`)
  t.same(log[log.length - 1], { ...log[log.length - 1], type: 'checkpoint', step: k, reason: 'interrupt' }, 'the last line is the checkpoint of the last step')
  const { metadata } = await loadSafetensors(path.join(out, 'checkpoint.safetensors'))
  t.equal(JSON.parse(metadata['versatile-ffn.optimizer']).step, k)

  const r = cli(['train', '--resume', out, '--stop-at', `${k + 3}`])
  t.equal(r.status, 0, r.stderr)
  const straight = path.join(dir, 'uninterrupted')
  t.equal(cli(['train', ...args, '--out', straight, '--stop-at', `${k + 3}`]).status, 0)
  t.same(trainLines(out).map((l) => l.loss), trainLines(straight).map((l) => l.loss), `steps 1 to ${k + 3}: the same losses`)
})

function capture() {
  let out = '', err = ''
  return { io: { stdout: { write: (s: string) => void (out += s) }, stderr: { write: (s: string) => void (err += s), isTTY: false } }, out: () => out, err: () => err }
}

t.test('bad requests: exit code 2, a message naming the flag or file, nothing written', async (t) => {
  const runDir = path.join(dir, 'run') // a finished run of the first test
  const badIds = path.join(dir, 'bad-ids.bin')
  writeBin(badIds, [...Buffer.from(text(2000, 3), 'latin1'), 300, 65, 66])
  const tinyVal = path.join(dir, 'tiny-val.bin')
  writeBin(tinyVal, Buffer.from('short', 'latin1'))
  const fresh = () => path.join(dir, `never-${Math.random().toString(36).slice(2)}`)
  const cases: [string[], RegExp][] = [
    [['train', '--bogus'], /unknown option --bogus/],
    [['train', '--out', fresh()], /--data: required/],
    [['train', '--data', train], /--out: required/],
    [['train', '--data', path.join(dir, 'missing.bin'), '--out', fresh()], /--data: .*missing\.bin: no such file/],
    [['train', ...BASE, '--val', path.join(dir, 'nope.bin'), '--out', fresh()], /--val: .*nope\.bin: no such file/],
    [['train', ...BASE, '--steps', '0', '--out', fresh()], /--steps: expected an integer in \[1, /],
    [['train', '--data', train, '--lr', 'fast', '--out', fresh()], /--lr: expected a number > 0, got "fast"/],
    [['train', ...BASE, '--ffn', 'wide', '--out', fresh()], /--ffn: expected one of versatile, dense, moe, loops, got "wide"/],
    [['train', ...BASE, '--loops', '2', '--out', fresh()], /--loops: only for --ffn loops, got --ffn versatile/],
    [['train', ...BASE, '--ffn', 'dense', '--experts', '4', '--out', fresh()], /--experts: only for --ffn versatile or moe, got --ffn dense/],
    [['train', ...BASE, '--ffn', 'loops', '--loops', '0', '--out', fresh()], /--loops: expected an integer in \[1, /],
    [['train', ...BASE, '--precision', 'fp8', '--out', fresh()], /--precision: expected one of float32, bf16-mixed/],
    [['train', ...BASE, '--recompute', 'all', '--out', fresh()], /--recompute: expected one of none, ffn, block/],
    [['train', ...BASE, '--config', 'huge', '--out', fresh()], /--config: expected one of tiny, small, 354m, 720m, 1\.21b/],
    [['train', ...BASE, '--accumulate', '3', '--out', fresh()], /--accumulate: expected a divisor of --batch 4, got 3/],
    [['train', ...BASE, '--device', 'tpu', '--out', fresh()], /--device: expected cpu, cuda or cuda:N/],
    [['train', ...BASE, '--steps', '10', '--stop-at', '10', '--out', fresh()], /--stop-at: expected a step before --steps 10/],
    [['train', ...BASE, '--out', runDir], /--out: .* already holds a run .*--resume/],
    [['train', '--data', badIds, '--batch', '2', '--seq', '16', '--out', fresh()], /--data: .*bad-ids\.bin: token 2000 \(id 300\) is >= vocabSize 256.*vocabulary of 256/],
    [['train', ...BASE, '--val', tinyVal, '--out', fresh()], /--val: 5 tokens hold no batch of 4 sequences of 33 tokens/],
    [['train', ...BASE, '--from-dense', path.join(runDir, 'model.safetensors'), '--out', fresh()], /--from-dense .*model\.safetensors: .*dense/],
    [['train', ...BASE, '--from-dense', runDir, '--config', 'tiny', '--out', fresh()], /--config: the sizes come from the --from-dense checkpoint/],
    [['train', '--resume', fresh()], /--resume: .*: no such folder/],
    [['train', '--resume', dir], /--resume: .* holds no checkpoint\.safetensors/],
    [['train', '--resume', runDir, '--lr', '1e-2'], /--lr: fixed by the run being resumed/],
    [['train', '--resume', runDir], /--steps: the run is at step 30 already/],
    ...(cuda.available() ? [] : [[['train', ...BASE, '--device', 'cuda', '--out', fresh()], /--device: CUDA is not available/] as [string[], RegExp]]),
    [['train', ...BASE, '--eval-every', '5', '--out', fresh()], /--eval-every: needs --val/],
    [['chart'], /expected at least one run folder/],
    [['chart', dir], /no log\.jsonl/],
  ]
  for (const [args, msg] of cases) {
    const c = capture()
    const before = fs.readdirSync(dir).sort()
    const logBefore = fs.readFileSync(path.join(runDir, 'log.jsonl'), 'utf8')
    const code = await main(args, c.io)
    t.equal(code, 2, `${args.join(' ')}: exit code 2 (${c.err().trim()})`)
    t.match(c.err(), msg, args.join(' '))
    t.match(c.err(), new RegExp(`^versatile-ffn ${args[0]}: `), 'no stack trace')
    t.notMatch(c.err(), /\n\s+at /, 'no stack trace')
    t.same(fs.readdirSync(dir).sort(), before, 'no folder or file made')
    t.equal(fs.readFileSync(path.join(runDir, 'log.jsonl'), 'utf8'), logBefore, 'the finished run is untouched')
  }
  // the same through the process: the exit code and the message
  const r = cli(['train', '--data', badIds, '--batch', '2', '--seq', '16', '--out', fresh()])
  t.equal(r.status, 2)
  t.match(r.stderr, /id 300/)
  const h = cli(['train', '--help'])
  t.equal(h.status, 0)
  t.match(h.stdout, /Usage: versatile-ffn train/)
  t.match(cli(['chart', '--help']).stdout, /Usage: versatile-ffn chart/)
})

// options whose model support landed separately: all of them train now (then the run folder is
// complete), alone and combined
t.test('--ffn moe|loops, --precision bf16-mixed, --recompute ffn|block: each trains', async (t) => {
  for (const flags of [['--ffn', 'moe'], ['--ffn', 'loops'], ['--precision', 'bf16-mixed'], ['--recompute', 'ffn'], ['--recompute', 'block'],
    ['--precision', 'bf16-mixed', '--recompute', 'ffn'], ['--ffn', 'loops', '--recompute', 'ffn'], ['--ffn', 'moe', '--recompute', 'block']]) {
    const out = path.join(dir, `opt-${flags.join('').replace(/-/g, '')}`)
    const c = capture()
    const code = await main(['train', ...BASE, '--steps', '3', '--out', out, ...flags], c.io)
    t.equal(code, 0, `${flags.join(' ')}: ${c.err().trim()}`)
    t.same(trainLines(out).map((l) => l.step), [1, 2, 3], `${flags.join(' ')}: trains`)
    t.ok(fs.existsSync(path.join(out, 'checkpoint.safetensors')))
  }
})

// the baselines' sizes reach the model, and the checkpoint's config records them
t.test('--ffn loops --loops N and --ffn moe --experts --top-k --expert-hidden build those models', async (t) => {
  for (const [flags, want] of [
    [['--ffn', 'loops', '--loops', '2'], { ffn: 'loops', loops: 2 }],
    [['--ffn', 'moe', '--experts', '4', '--top-k', '1', '--expert-hidden', '32'], { ffn: 'moe', experts: 4, topK: 1, expertHidden: 32 }],
  ] as [string[], Record<string, unknown>][]) {
    const out = path.join(dir, `sizes-${flags[1]}`)
    const c = capture()
    t.equal(await main(['train', ...BASE, '--steps', '2', '--out', out, ...flags], c.io), 0, `${flags.join(' ')}: ${c.err()}`)
    const m = await TransformerLM.fromFile(path.join(out, 'model.safetensors'))
    t.match(m.config, want, `${flags.join(' ')}: the model's config`)
    m.dispose()
  }
})
