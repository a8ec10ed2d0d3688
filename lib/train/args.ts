// `versatile-ffn train` and `versatile-ffn chart`: their flags, parsed and checked before anything
// is read or built, so a mistake is a usage error (exit code 2) and never a stack trace.
import * as fs from 'fs'
import * as path from 'path'
import { UsageError } from '../bench/args'

export const TRAIN_HELP = `Usage: versatile-ffn train --data TRAIN.bin --out DIR [options]
       versatile-ffn train --resume DIR [--steps N] [--out DIR] [options]

Trains a TransformerLM on token files (llm.c .bin or .npy) with AdamW and a cosine schedule. Writes
DIR/log.jsonl (one JSON line per step, per evaluation and per checkpoint), DIR/checkpoint.safetensors
(the latest checkpoint: weights, optimizer moments, data position), DIR/model.safetensors (the
weights alone, for TransformerLM.fromFile and --from-dense) and, with --chart, DIR/loss.svg.
Ctrl-C finishes the current step, saves a checkpoint and exits with code 130; --resume DIR
continues from it exactly (the same losses as a run that never stopped).

Data and model:
  --data FILE[,FILE...]     training token files, read as one stream (required unless --resume)
  --val FILE[,FILE...]      held-out token files for the validation loss
  --config NAME             tiny (default), small, 354m, 720m, 1.21b (TransformerLM.config)
  --vocab-size N            override the config's vocabulary (e.g. 50304 for GPT-2 tokens)
  --ffn KIND                versatile (default), dense, moe, loops
  --experts N --top-k K     experts and experts per token (versatile, moe; default 8 and 2)
  --expert-hidden E         expert width (versatile: default hidden/N; moe: hidden/K, the dense
                            model's active parameters)
  --loops N                 FFN applications per block with --ffn loops (default 4)
  --from-dense FILE|DIR     continue a dense model as VersatileFFN (sizes from the file): a file
                            save() wrote, or a dense run's folder (its model.safetensors)
  --precision P             float32 (default) or bf16-mixed
  --recompute R             none (default), ffn or block
  --temperature T           the Gumbel temperature schedule of VersatileFFN layers: paper (default,
                            tau = max(5*0.99984^step, 0.1)) or stretched (the same curve reaching
                            0.1 at the run's last step; for runs much shorter than the paper's)
  --device D                cpu, cuda or cuda:N (default cpu)
  --seed N                  seed of the weights, the Gumbel noise and the data order (default 1)

Optimisation:
  --steps N                 optimizer steps; also the length of the cosine schedule (default 100)
  --batch B                 sequences per step (default 8)
  --seq S                   tokens per sequence (default 64)
  --accumulate N            micro-batches per step; must divide --batch (default 1)
  --lr X                    peak learning rate (default 1e-3)
  --warmup N                warmup steps (default: a tenth of --steps)
  --min-lr-ratio X          floor of the cosine decay as a fraction of --lr (default 0.1)
  --weight-decay X          AdamW decay of matrices and embeddings (default 0.1)
  --grad-clip X             global L2 clip of the gradients, 0 disables (default 1.0)

Run:
  --out DIR                 run folder, created if missing (required unless --resume)
  --resume DIR              continue the run in DIR from its checkpoint; the data, model and
                            optimisation flags come from it (--data and --val may point elsewhere;
                            --steps may change the schedule's length, then losses differ)
  --eval-every N            validation loss every N steps and at the end (default: at the end only)
  --eval-batches N          batches per validation (default 8, at most what --val holds)
  --save-every N            also save the checkpoint every N steps (default: at the end only)
  --stop-at N               stop after step N with a checkpoint, as Ctrl-C would (the schedule
                            still spans --steps)
  --chart                   write DIR/loss.svg: train and validation loss against steps and time
  -h, --help                this text
`

export const CHART_HELP = `Usage: versatile-ffn chart DIR... [--out FILE]

Overlays the train and validation losses of the run folders (their log.jsonl) in one SVG, against
steps and against wall time.

Options:
  --out FILE   where to write the SVG (default loss.svg in the current folder)
  -h, --help   this text
`

/** The config names the command line takes, and TransformerLM.config's names for them. */
export const CONFIG_NAMES: Record<string, 'tiny' | 'small' | '354M' | '720M' | '1.21B'> = {
  tiny: 'tiny', small: 'small', '354m': '354M', '720m': '720M', '1.21b': '1.21B',
}
const FFN_KINDS = ['versatile', 'dense', 'moe', 'loops'] as const
const PRECISIONS = ['float32', 'bf16-mixed'] as const
const RECOMPUTE = ['none', 'ffn', 'block'] as const
const TEMPERATURES = ['paper', 'stretched'] as const

/** What the run is: everything that decides its losses (stored in the checkpoint, so a resume repeats it). */
export interface RunSettings {
  data: string[]
  val: string[]
  config: string
  vocabSize?: number
  ffn: (typeof FFN_KINDS)[number]
  /** the FFN's sizes when given (the model's defaults otherwise) */
  experts?: number
  topK?: number
  expertHidden?: number
  loops?: number
  fromDense?: string
  precision: (typeof PRECISIONS)[number]
  recompute: (typeof RECOMPUTE)[number]
  /** the Gumbel temperature schedule (absent in runs saved before it existed: 'paper') */
  temperature?: (typeof TEMPERATURES)[number]
  seed: number
  steps: number
  batch: number
  seq: number
  accumulate: number
  lr: number
  warmup: number
  minLrRatio: number
  weightDecay: number
  gradClip: number
  /** how the run reports and saves (kept for a resume unless given again) */
  evalEvery: number
  evalBatches: number
  saveEvery: number
  chart: boolean
}

/** The options of one invocation: the run's settings and how this process runs it. */
export interface TrainOptions {
  /** undefined when resuming: they come from the checkpoint (then `given` holds the flags given) */
  settings?: RunSettings
  /** with --resume: the flags given on the command line, by name */
  given: Map<string, string>
  resume?: string
  out: string
  device?: string
  evalEvery: number
  evalBatches: number
  saveEvery: number
  stopAt?: number
  chart: boolean
}

const VALUE_FLAGS = [
  'data', 'val', 'config', 'vocab-size', 'ffn', 'experts', 'top-k', 'expert-hidden', 'loops', 'from-dense', 'precision', 'recompute', 'temperature', 'device', 'seed',
  'steps', 'batch', 'seq', 'accumulate', 'lr', 'warmup', 'min-lr-ratio', 'weight-decay', 'grad-clip',
  'out', 'resume', 'eval-every', 'eval-batches', 'save-every', 'stop-at',
] as const
// with --resume only these may be given: they do not change what the run computes (or say so)
const RESUME_FLAGS = ['data', 'val', 'steps', 'device', 'out', 'resume', 'eval-every', 'eval-batches', 'save-every', 'stop-at']

function int(flag: string, v: string, min: number, max = 2 ** 31 - 1): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`--${flag}: expected an integer >= ${min}, got ${JSON.stringify(v)}`)
  const n = Number(v)
  if (n < min || n > max) throw new UsageError(`--${flag}: expected an integer in [${min}, ${max}], got ${v}`)
  return n
}

function num(flag: string, v: string, min: number, max = Infinity, exclusiveMin = false): number {
  const n = /^[+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(v) ? Number(v) : NaN
  if (!Number.isFinite(n) || n < min || (exclusiveMin && n === min) || n > max)
    throw new UsageError(`--${flag}: expected a number ${exclusiveMin ? '>' : '>='} ${min}${max < Infinity ? ` and <= ${max}` : ''}, got ${JSON.stringify(v)}`)
  return n
}

function oneOf<T extends string>(flag: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${flag}: expected one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`)
  return v as T
}

/** Token files named by a flag: comma-separated, each an existing file. */
export function files(flag: string, v: string): string[] {
  const list = v.split(',').map((s) => s.trim()).filter((s) => s !== '')
  if (list.length === 0) throw new UsageError(`--${flag}: expected a token file (or several, comma-separated)`)
  for (const f of list) {
    const st = fs.statSync(f, { throwIfNoEntry: false })
    if (!st) throw new UsageError(`--${flag}: ${f}: no such file`)
    if (!st.isFile()) throw new UsageError(`--${flag}: ${f}: not a file`)
  }
  return list.map((f) => path.resolve(f))
}

/** The flags after the command: name -> value; throws UsageError on unknown, doubled or valueless flags. */
function flags(argv: readonly string[], valueFlags: readonly string[], boolFlags: readonly string[]): { help: boolean; values: Map<string, string>; bools: Set<string>; positional: string[] } {
  const values = new Map<string, string>(), bools = new Set<string>(), positional: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-h' || a === '--help') return { help: true, values, bools, positional }
    if (!a.startsWith('--')) {
      positional.push(a)
      continue
    }
    const eq = a.indexOf('=')
    const name = a.slice(2, eq < 0 ? undefined : eq)
    if (boolFlags.includes(name)) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value, got ${JSON.stringify(a)}`)
      bools.add(name)
      continue
    }
    if (!valueFlags.includes(name)) throw new UsageError(`unknown option --${name}`)
    let v: string
    if (eq >= 0) v = a.slice(eq + 1)
    else {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) throw new UsageError(`--${name}: missing value`)
      v = argv[++i]
    }
    if (values.has(name)) throw new UsageError(`--${name} given twice`)
    values.set(name, v)
  }
  return { help: false, values, bools, positional }
}

function writableDir(flag: string, dir: string): void {
  const parent = path.dirname(path.resolve(dir))
  const st = fs.statSync(dir, { throwIfNoEntry: false })
  if (st && !st.isDirectory()) throw new UsageError(`--${flag}: ${dir} exists and is not a folder`)
  if (!st && !fs.statSync(parent, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--${flag}: the folder ${parent} does not exist`)
  try {
    fs.accessSync(st ? dir : parent, fs.constants.W_OK)
  } catch {
    throw new UsageError(`--${flag}: ${st ? dir : parent} is not writable`)
  }
}

/** Parses the arguments after `train`. Throws UsageError naming the flag or file. */
export function parseTrainArgs(argv: readonly string[]): { help: true } | { help: false; options: TrainOptions } {
  const f = flags(argv, VALUE_FLAGS, ['chart'])
  if (f.help) return { help: true }
  if (f.positional.length) throw new UsageError(`unexpected argument ${JSON.stringify(f.positional[0])}`)
  const get = (k: string) => f.values.get(k)
  const resume = get('resume')
  const common = {
    given: f.values,
    device: get('device'),
    evalEvery: get('eval-every') === undefined ? 0 : int('eval-every', get('eval-every')!, 1),
    evalBatches: get('eval-batches') === undefined ? 8 : int('eval-batches', get('eval-batches')!, 1),
    saveEvery: get('save-every') === undefined ? 0 : int('save-every', get('save-every')!, 1),
    stopAt: get('stop-at') === undefined ? undefined : int('stop-at', get('stop-at')!, 1),
    chart: f.bools.has('chart'),
  }
  if (common.device !== undefined && !/^(cpu|cuda(:\d+)?)$/.test(common.device))
    throw new UsageError(`--device: expected cpu, cuda or cuda:N, got ${JSON.stringify(common.device)}`)
  if (resume !== undefined) {
    const fixed = [...f.values.keys()].filter((k) => !RESUME_FLAGS.includes(k))
    if (fixed.length)
      throw new UsageError(`--${fixed[0]}: fixed by the run being resumed (its checkpoint stores it); with --resume only --${RESUME_FLAGS.filter((k) => k !== 'resume').join(', --')} may be given`)
    if (!fs.statSync(resume, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--resume: ${resume}: no such folder`)
    if (!fs.existsSync(path.join(resume, 'checkpoint.safetensors'))) throw new UsageError(`--resume: ${resume} holds no checkpoint.safetensors`)
    const out = get('out') ?? resume
    writableDir('out', out)
    if (get('data') !== undefined) files('data', get('data')!)
    if (get('val') !== undefined) files('val', get('val')!)
    if (get('steps') !== undefined) int('steps', get('steps')!, 1)
    return { help: false, options: { ...common, resume, out } }
  }
  if (get('data') === undefined) throw new UsageError('--data: required, the training token file (e.g. --data data_train.bin)')
  if (get('out') === undefined || get('out') === '') throw new UsageError('--out: required, the run folder (e.g. --out runs/tiny)')
  const out = get('out')!
  writableDir('out', out)
  if (fs.existsSync(path.join(out, 'log.jsonl')))
    throw new UsageError(`--out: ${out} already holds a run (log.jsonl); continue it with --resume ${out} or choose another folder`)
  const data = files('data', get('data')!)
  const val = get('val') === undefined ? [] : files('val', get('val')!)
  for (const k of ['eval-every', 'eval-batches']) if (get(k) !== undefined && val.length === 0) throw new UsageError(`--${k}: needs --val, the held-out token file`)
  // a run folder stands for the weights it wrote
  let denseArg = get('from-dense')
  if (denseArg !== undefined && fs.statSync(denseArg, { throwIfNoEntry: false })?.isDirectory()) denseArg = path.join(denseArg, 'model.safetensors')
  const fromDense = denseArg === undefined ? undefined : files('from-dense', denseArg)[0]
  if (fromDense && get('config') !== undefined) throw new UsageError('--config: the sizes come from the --from-dense checkpoint; give one or the other')
  if (fromDense && get('vocab-size') !== undefined) throw new UsageError('--vocab-size: the vocabulary comes from the --from-dense checkpoint')
  const configArg = (get('config') ?? 'tiny').toLowerCase()
  if (!fromDense && !(configArg in CONFIG_NAMES)) throw new UsageError(`--config: expected one of ${Object.keys(CONFIG_NAMES).join(', ')}, got ${JSON.stringify(get('config'))}`)
  const ffn = oneOf('ffn', get('ffn') ?? 'versatile', FFN_KINDS)
  if (fromDense && ffn !== 'versatile') throw new UsageError(`--ffn: --from-dense makes a VersatileFFN model, got --ffn ${ffn}`)
  // each size flag belongs to the FFN kinds that have the size
  const sizes: Record<string, [keyof RunSettings, readonly string[]]> = {
    experts: ['experts', ['versatile', 'moe']], 'top-k': ['topK', ['versatile', 'moe']], 'expert-hidden': ['expertHidden', ['versatile', 'moe']], loops: ['loops', ['loops']],
  }
  const ffnSizes: Partial<RunSettings> = {}
  for (const [flag, [key, kinds]] of Object.entries(sizes)) {
    if (get(flag) === undefined) continue
    if (!kinds.includes(ffn)) throw new UsageError(`--${flag}: only for --ffn ${kinds.join(' or ')}, got --ffn ${ffn}`)
    ;(ffnSizes as Record<string, number>)[key] = int(flag, get(flag)!, 1)
  }
  if (get('temperature') !== undefined && ffn !== 'versatile') throw new UsageError(`--temperature: only for --ffn versatile (its Gumbel noise), got --ffn ${ffn}`)
  const steps = get('steps') === undefined ? 100 : int('steps', get('steps')!, 1)
  const batch = get('batch') === undefined ? 8 : int('batch', get('batch')!, 1, 1 << 20)
  const accumulate = get('accumulate') === undefined ? 1 : int('accumulate', get('accumulate')!, 1, 1 << 20)
  if (batch % accumulate !== 0) throw new UsageError(`--accumulate: expected a divisor of --batch ${batch}, got ${accumulate}`)
  const warmup = get('warmup') === undefined ? Math.floor(steps / 10) : int('warmup', get('warmup')!, 0)
  if (common.stopAt !== undefined && common.stopAt >= steps) throw new UsageError(`--stop-at: expected a step before --steps ${steps}, got ${common.stopAt}`)
  const settings: RunSettings = {
    data, val,
    config: fromDense ? 'from-dense' : CONFIG_NAMES[configArg],
    vocabSize: get('vocab-size') === undefined ? undefined : int('vocab-size', get('vocab-size')!, 1),
    ffn, ...ffnSizes, fromDense,
    precision: oneOf('precision', get('precision') ?? 'float32', PRECISIONS),
    recompute: oneOf('recompute', get('recompute') ?? 'none', RECOMPUTE),
    temperature: oneOf('temperature', get('temperature') ?? 'paper', TEMPERATURES),
    seed: get('seed') === undefined ? 1 : int('seed', get('seed')!, 0, 2 ** 32 - 1),
    steps, batch, accumulate, warmup,
    seq: get('seq') === undefined ? 64 : int('seq', get('seq')!, 1, 1 << 24),
    lr: get('lr') === undefined ? 1e-3 : num('lr', get('lr')!, 0, Infinity, true),
    minLrRatio: get('min-lr-ratio') === undefined ? 0.1 : num('min-lr-ratio', get('min-lr-ratio')!, 0, 1),
    weightDecay: get('weight-decay') === undefined ? 0.1 : num('weight-decay', get('weight-decay')!, 0),
    gradClip: get('grad-clip') === undefined ? 1 : num('grad-clip', get('grad-clip')!, 0),
    evalEvery: common.evalEvery, evalBatches: common.evalBatches, saveEvery: common.saveEvery, chart: common.chart,
  }
  return { help: false, options: { ...common, settings, out } }
}

/** Parses the arguments after `chart`: run folders, each with a log.jsonl, and --out. */
export function parseChartArgs(argv: readonly string[]): { help: true } | { help: false; dirs: string[]; out: string } {
  const f = flags(argv, ['out'], [])
  if (f.help) return { help: true }
  if (f.positional.length === 0) throw new UsageError('expected at least one run folder (written by versatile-ffn train --out DIR)')
  for (const d of f.positional) {
    if (!fs.statSync(d, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`${d}: no such folder`)
    if (!fs.existsSync(path.join(d, 'log.jsonl'))) throw new UsageError(`${d}: no log.jsonl (not a run folder of versatile-ffn train)`)
  }
  const out = f.values.get('out') ?? 'loss.svg'
  if (out === '') throw new UsageError('--out: expected a file name')
  const dir = path.dirname(path.resolve(out))
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--out: the folder ${dir} does not exist`)
  return { help: false, dirs: f.positional, out }
}
