// The bench command line: parsing, defaults, overrides, and every kind of mistake giving a clear
// message on stderr and a non-zero exit code (called in-process and as a child process).
import t from 'tap'
import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'
import { main } from '../lib/cli'
import { parseBenchArgs, UsageError, BenchOptions } from '../lib/bench/args'
import { cuda } from '../lib/index'

const root = path.join(__dirname, '..')

function capture() {
  const out: string[] = []
  const err: string[] = []
  return {
    io: { stdout: { write: (s: string) => void out.push(s) }, stderr: { write: (s: string) => void err.push(s), isTTY: false } },
    out: () => out.join(''),
    err: () => err.join(''),
  }
}

function opts(argv: string[]): BenchOptions {
  const p = parseBenchArgs(argv)
  if (p.help) throw new Error('unexpected help')
  return p.options
}

t.test('defaults: small config, every case, random-init depth', async (t) => {
  const o = opts([])
  t.equal(o.config, 'small')
  t.same(o.shape, { dModel: 512, hidden: 2048, experts: 8, topK: 2, maxDepth: 4, expertHidden: 256 })
  t.equal(o.tokens, 512)
  t.equal(o.dtype, 'float32')
  t.same(o.depth, { kind: 'random-init' })
  t.equal(o.device, undefined, 'device left to auto-detection')
  t.equal(o.cases.length, 9)
  t.equal(o.json, false)
})

t.test('paper configs and overrides, both --flag value and --flag=value', async (t) => {
  const o = opts(['--config', '354m', '--tokens=64', '--hidden', '2048', '--experts=4', '--top-k', '1', '--max-depth', '3'])
  t.same(o.shape, { dModel: 1024, hidden: 2048, experts: 4, topK: 1, maxDepth: 3, expertHidden: 512 })
  t.equal(o.tokens, 64)
  const p = opts(['--config', '1.21b'])
  t.equal(p.shape.dModel, 2048)
  t.equal(p.shape.hidden, 8192)
  t.equal(p.tokens, 1024)
  const e = opts(['--config', '720m', '--expert-hidden', '100'])
  t.equal(e.shape.expertHidden, 100, 'E below I/N allowed (strided slices)')
  const d = opts(['--depth', 'fixed:3', '--dtype', 'bfloat16', '--cases', 'versatile.forward,dense.forward', '--json', '--chart', 'c.svg', '--threads', '1', '--repeat', '3', '--warmup', '0'])
  t.same(d.depth, { kind: 'fixed', loops: 3 })
  t.equal(d.dtype, 'bfloat16')
  t.same(d.cases, ['dense.forward', 'versatile.forward'], 'cases run in the canonical order')
  t.equal(d.json, true)
  t.equal(d.chart, 'c.svg')
  t.equal(d.threads, 1)
  t.equal(d.repeat, 3)
  t.equal(d.warmup, 0)
  t.same(parseBenchArgs(['--tokens', '5', '-h']), { help: true })
  t.same(opts(['--ffn', 'moe,loops']).cases, ['moe.forward', 'moe.train', 'loops.forward', 'loops.train'], '--ffn selects the cases of those FFNs')
  t.same(opts(['--ffn', 'dense,moe', '--cases', 'moe.train,versatile.train,dense.forward']).cases, ['dense.forward', 'moe.train'], 'with --cases: the cases in both')
})

const BAD: [string[], RegExp][] = [
  [['--bogus'], /unknown option --bogus/],
  [['--tokens'], /--tokens: missing value/],
  [['--tokens', '--json'], /--tokens: missing value/],
  [['--tokens', '0'], /--tokens: expected an integer in \[1, /],
  [['--tokens', '-3'], /--tokens: expected an integer >= 1, got "-3"/],
  [['--tokens', '1.5'], /--tokens: expected an integer/],
  [['--tokens', 'many'], /--tokens: expected an integer/],
  [['--tokens', '4', '--tokens', '8'], /--tokens given twice/],
  [['--dtype', 'float16'], /--dtype: expected one of float32, bfloat16, got "float16"/],
  [['--config', '7b'], /--config: expected one of small, tiny, 354m, 720m, 1.21b, got "7b"/],
  [['--depth', 'medium'], /--depth: expected one of random-init, uniform, shallow, deep, fixed:N/],
  [['--depth', 'fixed:5'], /fixed:N needs 1 <= N <= --max-depth \(4\), got fixed:5/],
  [['--depth', 'fixed:0'], /--depth: expected an integer in \[1, /],
  [['--top-k', '9'], /--top-k: expected at most --experts \(8\), got 9/],
  [['--config', 'tiny', '--expert-hidden', '200'], /expert slices must not overlap: 8 x 200 exceeds --hidden 1024/],
  [['--config', 'tiny', '--experts', '2000'], /--experts: 2000 experts leave no columns/],
  [['--d-model', '1'], /--d-model: expected an integer >= 2/],
  [['--cases', 'dense.forward,fast'], /--cases: expected one of .*got "fast"/],
  [['--cases', ','], /--cases: expected a comma-separated list/],
  [['--ffn', 'mixture'], /--ffn: expected one of dense, versatile, moe, loops, authors, got "mixture"/],
  [['--ffn', ','], /--ffn: expected a comma-separated list of FFNs/],
  [['--ffn', 'moe', '--cases', 'dense.forward'], /--ffn: none of the cases selected by --cases belongs to moe/],
  [['--device', 'tpu'], /--device: expected cpu, cuda or cuda:N, got "tpu"/],
  [['--repeat', '0'], /--repeat: expected an integer in \[1, /],
  [['--json=yes'], /--json takes no value/],
  [['stray'], /unexpected argument "stray"/],
]

t.test('every bad argument: UsageError naming the flag, exit code 2, message on stderr only', async (t) => {
  for (const [argv, re] of BAD) {
    t.throws(() => parseBenchArgs(argv), UsageError, argv.join(' '))
    const c = capture()
    const code = await main(['bench', ...argv], c.io)
    t.equal(code, 2, `exit code for ${argv.join(' ')}`)
    t.match(c.err(), re, `message for ${argv.join(' ')}`)
    t.match(c.err(), /see versatile-ffn bench --help/)
    t.equal(c.out(), '', 'nothing on stdout')
  }
})

t.test('commands: help, no command, unknown command, version', async (t) => {
  let c = capture()
  t.equal(await main(['bench', '--help'], c.io), 0)
  t.match(c.out(), /Usage: versatile-ffn bench/)
  t.match(c.out(), /--depth MODE/)
  t.match(c.out(), /authors\.forward/)
  c = capture()
  t.equal(await main([], c.io), 2, 'no command is a usage error')
  t.match(c.err(), /Commands:\n  bench/)
  c = capture()
  t.equal(await main(['benchmark'], c.io), 2)
  t.match(c.err(), /unknown command "benchmark"/)
  c = capture()
  t.equal(await main(['--version'], c.io), 0)
  t.equal(c.out().trim(), JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version)
})

t.test('CUDA asked for without CUDA: clear message, exit code 1', { skip: cuda.available() ? 'this machine has CUDA' : false }, async (t) => {
  for (const d of ['cuda', 'cuda:1']) {
    const c = capture()
    t.equal(await main(['bench', '--device', d, '--cases', 'dense.forward'], c.io), 1)
    t.match(c.err(), new RegExp(`--device ${d}: CUDA is not available on this machine \\(.+\\); use --device cpu`))
    t.equal(c.out(), '')
  }
})

// the same through a real process: the entry point sets the exit code and writes to stderr
t.test('as a child process', async (t) => {
  t.match(fs.readFileSync(path.join(root, 'lib/cli.ts'), 'utf8'), /^#!\/usr\/bin\/env node\n/, 'bin entry starts with a shebang')
  const loader = process.execArgv.filter((a) => a.includes('typescript'))
  const run = (...args: string[]) =>
    spawnSync(process.execPath, [...loader, path.join(root, 'lib/cli.ts'), ...args], { encoding: 'utf8', env: process.env, timeout: 120_000 })
  let r = run('bench', '--bogus')
  t.equal(r.status, 2)
  t.match(r.stderr, /versatile-ffn bench: unknown option --bogus/)
  t.equal(r.stdout, '')
  r = run('bench', '--tokens', 'x')
  t.equal(r.status, 2)
  t.match(r.stderr, /--tokens: expected an integer/)
  r = run('bench', '--help')
  t.equal(r.status, 0)
  t.match(r.stdout, /Usage: versatile-ffn bench/)
  if (!cuda.available()) {
    r = run('bench', '--device', 'cuda')
    t.equal(r.status, 1)
    t.match(r.stderr, /CUDA is not available/)
  }
})

// the compiled bin entry, when the build is current (npm install and npm run build:ts produce it)
const dist = path.join(root, 'dist/cli.js')
const distCurrent = fs.existsSync(dist) && fs.statSync(dist).mtimeMs >= fs.statSync(path.join(root, 'lib/cli.ts')).mtimeMs
t.test('the compiled bin dist/cli.js', { skip: distCurrent ? false : 'dist/cli.js missing or older than lib/cli.ts' }, async (t) => {
  t.match(fs.readFileSync(dist, 'utf8'), /^#!\/usr\/bin\/env node\n/)
  let r = spawnSync(process.execPath, [dist, 'bench', '--depth', 'fixed:x'], { encoding: 'utf8', env: process.env, timeout: 60_000 })
  t.equal(r.status, 2)
  t.match(r.stderr, /--depth: expected one of random-init, .*fixed:N, got "fixed:x"/)
  r = spawnSync(process.execPath, [dist, 'bench', '--help'], { encoding: 'utf8', env: process.env, timeout: 60_000 })
  t.equal(r.status, 0)
  t.match(r.stdout, /--chart FILE/)
})
