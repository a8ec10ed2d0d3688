// The learning study: which FFN learns most from the same data and steps? Dense, 4-loop, a
// mixture of experts with the dense model's active parameters, VersatileFFN from scratch and
// VersatileFFN continued from a dense model (the paper's regime), each under both Gumbel
// temperature regimes where it has one, over several seeds, on real English text.
//
// Data: the text of the Debian package `fortunes` (BSD licence, see its copyright file), fetched
// with `apt-get download` into the output folder (not committed), as bytes (vocabulary 256), so
// the tiny models spend their compute on the FFN rather than on a 50k-row output layer. Every
// 100th fortune goes to the validation split.
//
// Every run is `versatile-ffn train` (dist/cli.js); the summary table and charts are written to
// --out. Usage:
//   npx ts-node --transpile-only bench/learning-study.ts [--steps 600] [--seeds 1,2,3]
//     [--config tiny] [--batch 16] [--seq 128] [--lr 2e-3] [--out bench/out/study] [--only NAME,...]
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import * as path from 'node:path'
import { LlmcWriter } from '../lib/data/formats'

const argv = process.argv.slice(2)
const flag = (name: string, dflt: string): string => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt
}
const STEPS = Number(flag('steps', '600'))
const SEEDS = flag('seeds', '1,2,3').split(',').map(Number)
const CONFIG = flag('config', 'tiny')
const BATCH = flag('batch', '16')
const SEQ = flag('seq', '128')
const LR = flag('lr', '2e-3')
const OUT = path.resolve(flag('out', 'bench/out/study'))
const ONLY = flag('only', '') ? flag('only', '').split(',') : undefined
const EVAL_EVERY = String(Math.max(1, Math.round(STEPS / 12)))
const CLI = path.join(__dirname, '..', 'dist', 'cli.js')
if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build the package first (npm install)`)
if (!(Number.isInteger(STEPS) && STEPS >= 2)) throw new Error('--steps: an integer >= 2')

// ---- the data: fortunes, as bytes
function fetchText(dir: string): string {
  const cache = path.join(dir, 'fortunes.txt')
  if (existsSync(cache)) return readFileSync(cache, 'latin1')
  const work = mkdtempSync(path.join(tmpdir(), 'vffn-study-'))
  try {
    execFileSync('apt-get', ['download', 'fortunes'], { cwd: work, stdio: 'inherit' })
    const deb = readdirSync(work).find((f) => f.endsWith('.deb'))
    if (!deb) throw new Error('apt-get download fortunes gave no .deb')
    execFileSync('dpkg-deb', ['-x', deb, 'x'], { cwd: work })
    const root = path.join(work, 'x', 'usr', 'share', 'games', 'fortunes')
    const files = readdirSync(root).filter((f) => !f.endsWith('.dat') && !f.endsWith('.u8') && statSync(path.join(root, f)).isFile()).sort()
    const text = files.map((f) => readFileSync(path.join(root, f), 'latin1')).join('\n%\n')
    writeFileSync(cache, text, 'latin1')
    writeFileSync(path.join(dir, 'fortunes.copyright'), readFileSync(path.join(work, 'x', 'usr', 'share', 'doc', 'fortunes', 'copyright')))
    return text
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

function prepareData(dir: string): { train: string; val: string; bytes: number; trainTokens: number; valTokens: number } {
  mkdirSync(dir, { recursive: true })
  const train = path.join(dir, 'train.bin'), val = path.join(dir, 'val.bin')
  const text = fetchText(dir)
  const fortunes = text.split(/\r?\n%\r?\n/).map((s) => s.trim()).filter((s) => s.length > 0)
  const tw = new LlmcWriter(train), vw = new LlmcWriter(val)
  fortunes.forEach((f, i) => {
    // byte 0 (absent from the text) ends each fortune
    const ids = Array.from(Buffer.from(f + '\0', 'latin1'))
    ;(i % 100 === 99 ? vw : tw).write(ids)
  })
  const trainTokens = tw.tokens, valTokens = vw.tokens
  tw.close()
  vw.close()
  return { train, val, bytes: Buffer.byteLength(text, 'latin1'), trainTokens, valTokens }
}

// ---- the runs
interface Run { name: string; seed: number; dir: string; args: string[]; after?: string }
const data = prepareData(path.join(OUT, 'data'))
console.log(`data: ${(data.bytes / 1e6).toFixed(2)} MB of fortunes, ${data.trainTokens} train and ${data.valTokens} validation bytes`)
const common = ['--data', data.train, '--val', data.val, '--config', CONFIG, '--batch', BATCH, '--seq', SEQ, '--lr', LR,
  '--eval-every', EVAL_EVERY, '--eval-batches', '16']
const half = Math.floor(STEPS / 2)
const runs: Run[] = []
for (const seed of SEEDS) {
  const d = (n: string) => path.join(OUT, 'runs', `${n}-s${seed}`)
  const s = ['--seed', String(seed)]
  runs.push({ name: 'dense', seed, dir: d('dense'), args: [...common, ...s, '--ffn', 'dense', '--steps', String(STEPS)] })
  runs.push({ name: 'loops4', seed, dir: d('loops4'), args: [...common, ...s, '--ffn', 'loops', '--steps', String(STEPS)] })
  runs.push({ name: 'moe', seed, dir: d('moe'), args: [...common, ...s, '--ffn', 'moe', '--steps', String(STEPS)] })
  for (const t of ['paper', 'stretched'])
    runs.push({ name: `versatile-${t}`, seed, dir: d(`versatile-${t}`), args: [...common, ...s, '--ffn', 'versatile', '--steps', String(STEPS), '--temperature', t] })
  // the paper's regime: a dense model trained for half the steps, continued as VersatileFFN for the other half
  runs.push({ name: 'dense-half', seed, dir: d('dense-half'), args: [...common, ...s, '--ffn', 'dense', '--steps', String(half)] })
  for (const t of ['paper', 'stretched'])
    runs.push({
      name: `from-dense-${t}`, seed, dir: d(`from-dense-${t}`), after: d('dense-half'),
      args: [...common.filter((_, i, a) => a[i] !== '--config' && a[i - 1] !== '--config'), ...s, '--from-dense', d('dense-half'), '--steps', String(STEPS - half), '--temperature', t],
    })
}

interface Line { type: string; step: number; loss: number | null; time: number; loops?: number | null; parameters?: number }
const readLog = (dir: string): Line[] =>
  existsSync(path.join(dir, 'log.jsonl')) ? readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Line) : []

mkdirSync(path.join(OUT, 'runs'), { recursive: true })
for (const r of runs) {
  if (ONLY && !ONLY.includes(r.name) && !(r.name === 'dense-half' && ONLY.some((o) => o.startsWith('from-dense')))) continue
  if (readLog(r.dir).some((l) => l.type === 'checkpoint' && (l as unknown as { reason: string }).reason === 'end')) continue
  rmSync(r.dir, { recursive: true, force: true })
  console.log(`== ${r.name} seed ${r.seed}`)
  const p = spawnSync(process.execPath, [CLI, 'train', ...r.args, '--out', r.dir, '--chart'], { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' })
  if (p.status !== 0) throw new Error(`${r.name} seed ${r.seed} failed (${p.status}): ${p.stderr.slice(-2000)}`)
}

// ---- the summary: final validation loss (mean ± sd over seeds), training time, mean loops
const groups = [...new Set(runs.map((r) => r.name))].filter((n) => n !== 'dense-half')
const stat = (xs: number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0
  return { m, sd }
}
const rows: string[] = ['| FFN | parameters | final val loss (mean ± sd) | seeds | train time, s (median) | mean loops/token at the end |', '|---|---|---|---|---|---|']
for (const g of groups) {
  const rs = runs.filter((r) => r.name === g)
  const fin: number[] = [], times: number[] = [], loops: number[] = []
  let params = 0
  for (const r of rs) {
    const log = readLog(r.dir)
    const v = log.filter((l) => l.type === 'val' && l.loss !== null).pop()
    const tr = log.filter((l) => l.type === 'train').pop()
    if (!v || !tr) continue
    fin.push(v.loss as number)
    params = log.find((l) => l.type === 'start')?.parameters ?? 0
    // a continued run's time includes its dense half's
    const before = r.after ? (readLog(r.after).filter((l) => l.type === 'train').pop()?.time ?? 0) : 0
    times.push(tr.time + before)
    if (typeof tr.loops === 'number') loops.push(tr.loops)
  }
  if (!fin.length) continue
  const s = stat(fin)
  times.sort((a, b) => a - b)
  rows.push(`| ${g} | ${params.toLocaleString('en-US')} | ${s.m.toFixed(4)} ± ${s.sd.toFixed(4)} | ${fin.length} | ${times[times.length >> 1].toFixed(1)} | ${loops.length ? stat(loops).m.toFixed(2) : '–'} |`)
}
const table = rows.join('\n')
console.log(table)
writeFileSync(path.join(OUT, 'summary.md'), `${table}\n`)
// one chart per seed with every FFN, and one per FFN with every seed
for (const seed of SEEDS) {
  const dirs = runs.filter((r) => r.seed === seed && r.name !== 'dense-half' && existsSync(path.join(r.dir, 'log.jsonl'))).map((r) => r.dir)
  if (dirs.length) execFileSync(process.execPath, [CLI, 'chart', ...dirs, '--out', path.join(OUT, `study-seed${seed}.svg`)], { stdio: 'inherit' })
}
