// scripts/gpu-check.sh on a machine without a GPU: the pack is made from the current build, and
// the run step must fail, say that no CUDA test ran, and leave its partial results in $OUT; a
// stale pack and a folder that is no build are refused. (the check itself runs on a lent GPU.)
import t from 'tap'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { cuda } from '../lib/index'

const root = path.join(__dirname, '..')
const script = path.join(root, 'scripts', 'gpu-check.sh')
// a configured build with the CUDA library: pack's incremental build relinks the addon when packing
// moved it to prebuilds/ (npm pack does, before the tests run in CI)
const built = fs.existsSync(path.join(root, 'build', 'CMakeCache.txt')) && fs.existsSync(path.join(root, 'build', 'Release', 'libvffn_cuda.so'))
const SKIP = cuda.available()
  ? 'a GPU is here: the check would run for real (scripts/gpu-check.sh run)'
  : built ? false : 'no CUDA library in build/Release (built without nvcc): nothing to pack'

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-gpu-check-'))
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }))
const dir = path.join(work, 'carry')

function sh(args: string[], env: Record<string, string>) {
  const r = spawnSync('bash', [script, ...args], {
    cwd: root, encoding: 'utf8', timeout: 400_000,
    env: { ...process.env, GPU_CHECK_DIR: dir, ...env },
  })
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` }
}

interface Step { step: string; result: string; note: string; pass?: number; skip?: number }
const summary = (out: string) => JSON.parse(fs.readFileSync(path.join(out, 'gpu-check.json'), 'utf8')) as { steps: Step[]; passed: boolean }

t.test('pack refuses a folder that is no build', { skip: SKIP }, async (t) => {
  fs.mkdirSync(path.join(work, 'nothing'))
  fs.writeFileSync(path.join(work, 'nothing', 'x'), '')
  const r = sh(['pack'], { BUILD: path.join(work, 'nothing') })
  t.not(r.status, 0, 'exit status')
  t.match(r.out, /is not a cmake-js build folder/, r.out.trim().split('\n').pop())
})

t.test('without a GPU the run fails, says no CUDA test ran, and keeps what ran', { skip: SKIP }, async (t) => {
  // node travels raw here (a local run); the build is incremental, current after the suite's build
  const p = sh(['pack'], { BUILD: 'build', GPU_CHECK_NODE: 'raw' })
  t.equal(p.status, 0, `pack: ${p.out.trim().split('\n').slice(-3).join(' | ')}`)
  if (p.status !== 0) return
  t.ok(fs.existsSync(path.join(dir, 'pack', 'test', 'cuda-ops.js')), 'the CUDA tests were compiled into the pack')

  // the default: a failed smoke step stops the run at once
  const out1 = path.join(work, 'out1')
  const r1 = sh(['run'], { OUT: out1 })
  t.not(r1.status, 0, 'exit status')
  t.match(r1.out, /no CUDA test ran/, 'says that no CUDA test ran')
  const s1 = summary(out1)
  t.equal(s1.passed, false)
  t.same(s1.steps.map((s) => [s.step, s.result]), [['unpack', 'ok'], ['smoke', 'FAIL']], 'unpack, then the smoke step failed')
  t.ok(fs.existsSync(path.join(out1, 'gpu-check.log')), 'the log is in $OUT')

  // every step anyway: the CUDA tests all skip, and that is a failure, not a pass
  const out2 = path.join(work, 'out2')
  const r2 = sh(['run'], { OUT: out2, GPU_CHECK_KEEP_GOING: '1', TESTS_S: '240', BENCH_S: '60' })
  t.not(r2.status, 0, 'exit status')
  t.match(r2.out, /no CUDA test ran in full \(op tests: pass 0, skip [1-9]/, 'the tests step counts the skips')
  const s2 = summary(out2)
  const tests = s2.steps.find((s) => s.step === 'tests')
  t.ok(tests && tests.result === 'FAIL' && tests.pass === 0 && (tests.skip ?? 0) > 0, `tests step: ${JSON.stringify(tests)}`)
  for (const tool of ['memcheck', 'initcheck', 'racecheck', 'bench'])
    t.equal(s2.steps.find((s) => s.step === tool)?.result, 'FAIL', `${tool} did not pass`)
  t.match(fs.readFileSync(path.join(out2, 'tests.log'), 'utf8'), /# SKIP no GPU here/, 'tests.log holds the skipped tests and why')
  t.ok(fs.readdirSync(out2).length <= 8, 'at most 8 files come back from $OUT')

  // a pack made from other sources is refused before anything runs
  const info = path.join(dir, 'pack', 'BUILD-INFO')
  fs.writeFileSync(info, fs.readFileSync(info, 'utf8').replace(/^sources \S+/m, 'sources 0000000000000000'))
  const r3 = sh(['run'], { OUT: path.join(work, 'out3') })
  t.not(r3.status, 0, 'exit status')
  t.match(r3.out, /the pack \(0000000000000000\) is stale/, 'a stale pack is refused')
})
