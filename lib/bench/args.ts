import * as fs from 'fs'
import * as path from 'path'
import { CASE_HELP, CASE_NAMES, CONFIGS, CaseName, ConfigName, DepthMode, Shape, depthName } from './config'

/** A mistake in the command line: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

export type BenchDType = 'float32' | 'bfloat16'

export interface BenchOptions {
  /** 'cpu', 'cuda' or 'cuda:N'; undefined = CUDA when available, else CPU. */
  device?: string
  config: ConfigName
  /** the config's name, with the sizes given on the command line that differ from it */
  configLabel: string
  shape: Shape
  tokens: number
  dtype: BenchDType
  depth: DepthMode
  repeat: number
  warmup: number
  cases: CaseName[]
  json: boolean
  chart?: string
  threads?: number
  seed: number
}

export type Parsed = { help: true } | { help: false; options: BenchOptions }

const VALUE_FLAGS = [
  'device', 'config', 'd-model', 'hidden', 'experts', 'top-k', 'max-depth', 'expert-hidden',
  'tokens', 'dtype', 'depth', 'repeat', 'warmup', 'cases', 'ffn', 'chart', 'threads', 'seed',
] as const
type ValueFlag = (typeof VALUE_FLAGS)[number]
const BOOL_FLAGS = ['json', 'help'] as const
/** The FFNs the cases belong to (a case's name starts with its FFN). */
export const FFN_KINDS = ['dense', 'versatile', 'moe', 'loops', 'authors'] as const

export const HELP = `Usage: versatile-ffn bench [options]

Times the dense FFN, VersatileFFN and three baselines side by side on one device, in one run.

Options:
  --device cpu|cuda|cuda:N   device (default: cuda when available, else cpu)
  --config NAME              small (default; D=512 I=2048 T=512), tiny (D=256 I=1024 T=256),
                             354m (D=1024 I=4096),
                             720m (D=1536 I=6144), 1.21b (D=2048 I=8192); N=8 K=2 L=4; paper
                             configs default to --tokens 1024
  --d-model N --hidden N --experts N --top-k N --max-depth N --expert-hidden N
                             override the config's D, I, N, K, L, E (E defaults to floor(I/N))
  --tokens N                 tokens per batch T
  --dtype float32|bfloat16   weight dtype (default float32; activations and gradients are float32)
  --depth MODE               loops per token at inference: random-init (the freshly initialised
                             loop head decides; default), uniform (equal shares of 1..L), shallow
                             (shares halve with each extra loop), deep (the mirror), fixed:N
  --warmup N                 untimed runs per case first (default 2); one more untimed run
                             then samples memory and the loop counts the FLOPs come from
  --repeat N                 timed runs per case (default 7), in rounds over the cases
  --cases A,B,...            subset of: ${CASE_NAMES.join(', ')}
  --ffn A,B,...              only the cases of these FFNs: ${FFN_KINDS.join(', ')} (with --cases:
                             the cases in both); moe runs N experts of width floor(I/K), K per
                             token (equal active parameters), loops the dense FFN L times
  --threads N                CPU threads per op (default: every core)
  --seed N                   seed of weights, inputs and Gumbel noise (default 1)
  --json                     print JSON instead of the table
  --chart FILE               also write an SVG chart of time per case
  -h, --help                 this text

Cases:
${CASE_NAMES.map((n) => `  ${n.padEnd(18)} ${CASE_HELP[n]}`).join('\n')}
`

function int(flag: string, v: string, min: number, max = 1 << 30): number {
  if (!/^\d+$/.test(v)) throw new UsageError(`--${flag}: expected an integer >= ${min}, got ${JSON.stringify(v)}`)
  const n = Number(v)
  if (n < min || n > max) throw new UsageError(`--${flag}: expected an integer in [${min}, ${max}], got ${v}`)
  return n
}

function oneOf<T extends string>(flag: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v))
    throw new UsageError(`--${flag}: expected one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`)
  return v as T
}

function parseDepth(v: string): DepthMode {
  const m = /^fixed:(\d+)$/.exec(v)
  if (m) return { kind: 'fixed', loops: int('depth', m[1], 1) }
  const kind = oneOf('depth', v, ['random-init', 'uniform', 'shallow', 'deep', 'fixed:N'] as const)
  if (kind === 'fixed:N') throw new UsageError('--depth: fixed needs a loop count, e.g. fixed:2')
  return { kind }
}

/** Parses the arguments after `bench`. Throws UsageError with a message naming the flag. */
export function parseBenchArgs(argv: readonly string[]): Parsed {
  const values = new Map<ValueFlag, string>()
  let json = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '-h' || arg === '--help') return { help: true }
    if (!arg.startsWith('--')) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`)
    const eq = arg.indexOf('=')
    const name = arg.slice(2, eq < 0 ? undefined : eq)
    if ((BOOL_FLAGS as readonly string[]).includes(name)) {
      if (eq >= 0) throw new UsageError(`--${name} takes no value, got ${JSON.stringify(arg)}`)
      if (name === 'json') json = true
      continue
    }
    if (!(VALUE_FLAGS as readonly string[]).includes(name)) throw new UsageError(`unknown option --${name}`)
    let value: string
    if (eq >= 0) value = arg.slice(eq + 1)
    else {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) throw new UsageError(`--${name}: missing value`)
      value = argv[++i]
    }
    if (values.has(name as ValueFlag)) throw new UsageError(`--${name} given twice`)
    values.set(name as ValueFlag, value)
  }
  const get = (f: ValueFlag) => values.get(f)

  const config = oneOf('config', get('config') ?? 'small', Object.keys(CONFIGS) as ConfigName[])
  const base = CONFIGS[config]
  const dim = (f: ValueFlag, dflt: number) => (get(f) === undefined ? dflt : int(f, get(f)!, 1))
  const dModel = dim('d-model', base.dModel)
  const hidden = dim('hidden', base.hidden)
  const experts = dim('experts', base.experts)
  const topK = dim('top-k', base.topK)
  const maxDepth = dim('max-depth', base.maxDepth)
  const expertHidden = dim('expert-hidden', Math.floor(hidden / experts))
  if (topK > experts) throw new UsageError(`--top-k: expected at most --experts (${experts}), got ${topK}`)
  if (expertHidden < 1) throw new UsageError(`--experts: ${experts} experts leave no columns of --hidden ${hidden} to each`)
  if (expertHidden * experts > hidden)
    throw new UsageError(`--expert-hidden: expert slices must not overlap: ${experts} x ${expertHidden} exceeds --hidden ${hidden}`)
  // the forced depth distributions write the loop choice into the first two input columns (cases.ts)
  if (dModel < 2) throw new UsageError(`--d-model: expected an integer >= 2, got ${dModel}`)

  const depth = parseDepth(get('depth') ?? 'random-init')
  if (depth.kind === 'fixed' && depth.loops > maxDepth)
    throw new UsageError(`--depth: fixed:N needs 1 <= N <= --max-depth (${maxDepth}), got ${depthName(depth)}`)

  let cases: CaseName[] = [...CASE_NAMES]
  const list = get('cases')
  if (list !== undefined) {
    const asked = list.split(',').map((s) => s.trim()).filter((s) => s !== '')
    if (asked.length === 0) throw new UsageError('--cases: expected a comma-separated list of case names')
    for (const c of asked) oneOf('cases', c, CASE_NAMES)
    cases = CASE_NAMES.filter((c) => asked.includes(c))
  }
  const kinds = get('ffn')
  if (kinds !== undefined) {
    const asked = kinds.split(',').map((s) => s.trim()).filter((s) => s !== '')
    if (asked.length === 0) throw new UsageError('--ffn: expected a comma-separated list of FFNs')
    for (const k of asked) oneOf('ffn', k, FFN_KINDS)
    cases = cases.filter((c) => asked.includes(c.split('.')[0]))
    if (cases.length === 0) throw new UsageError(`--ffn: none of the cases selected by --cases belongs to ${asked.join(', ')}`)
  }

  const device = get('device')
  if (device !== undefined && !/^(cpu|cuda(:\d+)?)$/.test(device))
    throw new UsageError(`--device: expected cpu, cuda or cuda:N, got ${JSON.stringify(device)}`)
  const chart = get('chart')
  if (chart !== undefined && chart === '') throw new UsageError('--chart: expected a file name')
  // checked before the run, not after minutes of measuring
  if (chart !== undefined) {
    const dir = path.dirname(path.resolve(chart))
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UsageError(`--chart: the folder ${JSON.stringify(dir)} does not exist`)
    try {
      fs.accessSync(dir, fs.constants.W_OK)
    } catch {
      throw new UsageError(`--chart: the folder ${JSON.stringify(dir)} is not writable`)
    }
  }
  // the header names the config and every size that differs from it
  const changed = ([['D', dModel, base.dModel], ['I', hidden, base.hidden], ['N', experts, base.experts], ['K', topK, base.topK], ['L', maxDepth, base.maxDepth]] as const)
    .filter(([, v, b]) => v !== b)
    .map(([k, v]) => `${k}=${v}`)
  const configLabel = changed.length ? `${config} with ${changed.join(' ')}` : config

  return {
    help: false,
    options: {
      device,
      config,
      configLabel,
      shape: { dModel, hidden, experts, topK, maxDepth, expertHidden },
      tokens: dim('tokens', base.tokens),
      dtype: oneOf('dtype', get('dtype') ?? 'float32', ['float32', 'bfloat16'] as const),
      depth,
      repeat: get('repeat') === undefined ? 7 : int('repeat', get('repeat')!, 1, 100000),
      warmup: get('warmup') === undefined ? 2 : int('warmup', get('warmup')!, 0, 100000),
      cases,
      json,
      chart,
      threads: get('threads') === undefined ? undefined : int('threads', get('threads')!, 1, 256),
      seed: get('seed') === undefined ? 1 : int('seed', get('seed')!, 0, Number.MAX_SAFE_INTEGER),
    },
  }
}
