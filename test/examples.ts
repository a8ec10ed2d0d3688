// Every program in examples/ runs as a user would run it, importing 'versatile-ffn' (resolved to
// this package's built dist/), at small sizes, and its output says what it should.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { loadSafetensors } from '../lib/index'

const root = resolve(__dirname, '..')
const scratch = mkdtempSync(join(tmpdir(), 'vffn-examples-'))
mkdirSync(join(scratch, 'node_modules'))
symlinkSync(root, join(scratch, 'node_modules', 'versatile-ffn'))
t.teardown(() => rmSync(scratch, { recursive: true, force: true }))

function run(file: string, args: string[] = []): string {
  // the TypeScript loader this test runs under; 'versatile-ffn' resolves through NODE_PATH to dist/
  const loader = process.execArgv.filter((a) => a.includes('typescript'))
  const r = spawnSync(process.execPath, [...loader, join(root, 'examples', file), ...args], {
    cwd: root, encoding: 'utf8', env: { ...process.env, NODE_PATH: join(scratch, 'node_modules') }, timeout: 300_000,
  })
  if (r.status !== 0) throw new Error(`${file} exited with ${r.status}:\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}
const num = (out: string, re: RegExp): number => {
  const m = out.match(re)
  if (!m) throw new Error(`no match for ${re} in:\n${out}`)
  return Number(m[1])
}

t.test('quickstart: matmul equals the plain loop; memory freed', async (t) => {
  const out = run('quickstart.ts')
  t.match(out, /Tensor\(float32 \[8, 12\] cpu\)/, 'console.log shows the tensor')
  t.ok(num(out, /max abs difference from a plain loop: (\S+)/) < 1e-5, 'float32 products of 16 terms agree to 1e-5')
  t.equal(num(out, /live bytes after dispose: (\d+)/), 0)
})

t.test('ffn-routing: the stats add up on a [batch, seq, D] input', async (t) => {
  const out = run('ffn-routing.ts', ['32', '3', '10'])
  t.match(out, /input 3x10x32 -> versatile 3x10x32, dense 3x10x32/)
  const hist = out.match(/loops per token: (.*) \(of (\d+) tokens\)/)!
  const counts = hist[1].split(' ').map((p) => Number(p.split(':')[1]))
  t.equal(counts.reduce((a, b) => a + b, 0), 30, 'every token has a depth')
  t.ok(counts.filter((c) => c > 0).length > 1, 'tokens exit at different depths')
  const assign = out.match(/expert assignments: ([\d ]+) \(sum (\d+) = T·K = (\d+)\)/)!
  t.equal(assign[1].trim().split(' ').length, 8, 'N = 8 experts by default')
  t.equal(Number(assign[2]), 60, 'T·K assignments')
  t.ok(num(out, /balance loss ([-+0-9.e]+)/) > 0, 'the balance loss is positive')
})

t.test('train-small: the loss falls', async (t) => {
  const out = run('train-small.ts', ['80'])
  const first = num(out, /first loss (\S+)/), last = num(out, /final loss (\S+)/)
  t.ok(first > Math.log(256) * 0.9, `starts near chance (ln 256 = 5.55), got ${first}`)
  t.ok(last < first - 1, `final loss ${last} is well below the first ${first}`)
})

t.test('checkpoint-interop: bit-exact round trip, and Python reads the same values', async (t) => {
  const dir = mkdtempSync(join(scratch, 'ckpt-'))
  const out = run('checkpoint-interop/save-and-load.ts', [dir])
  t.match(out, /round trip: bit-exact/)
  const js = out.split('\n').filter((l) => l.startsWith('tensor '))
  t.equal(js.length, 5, 'five parameters')
  // the Python side needs the safetensors library (with numpy, or PyTorch); Debian's may be under /usr/bin
  const pythons = ['python3', '/usr/bin/python3']
  const py = pythons.find((p) => spawnSync(p, ['-c', 'import safetensors'], { encoding: 'utf8' }).status === 0)
  if (!py) {
    t.comment(`skipping the Python half: no interpreter among ${pythons.join(', ')} can import safetensors`)
    t.skip('Python reads our file (safetensors not importable)')
    return
  }
  const r = spawnSync(py, [join(root, 'examples', 'checkpoint-interop', 'read.py'), join(dir, 'ffn.safetensors')], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  const pyLines = r.stdout.split('\n').filter((l) => l.startsWith('tensor '))
  const sums = (ls: string[]) => new Map(ls.map((l) => [l.split(' ')[1], Number(l.split(' sum ')[1])]))
  for (const [name, s] of sums(js)) t.ok(Math.abs(s - sums(pyLines).get(name)!) < 1e-4, `${name}: the same sum in Python`)
  const back = await loadSafetensors(join(dir, 'ffn-from-python.safetensors'))
  t.equal(back.tensors.size, 5, 'the file Python wrote reads back here')
})
