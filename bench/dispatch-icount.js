// Instructions of JS-thread work per queued op, counted by callgrind, so they do not depend on the
// host's load: each mode runs in a child under valgrind twice, queuing 2,000 and 12,000 ops (after
// 30,000 to warm the JIT, with the CPU worker asleep so it runs none of them), and the difference
// of the two totals is divided by 10,000. Needs valgrind and the built package (npm run build).
// Run: node bench/dispatch-icount.js [direct,direct-object,matmul,matmul-alloc,tensor]
'use strict'
const { spawnSync } = require('child_process')

const MODES = ['direct', 'direct-object', 'matmul', 'matmul-alloc', 'tensor']

function child(mode, n) {
  const { _native, matmul, tensor, empty } = require('../dist/index.js')
  const a = tensor(new Float32Array([1, 2, 3, 4]), [2, 2]), b = tensor(new Float32Array([5, 6, 7, 8]), [2, 2])
  const c = tensor(new Float32Array(4), [2, 2])
  const ops = {
    direct: () => _native.gemm(c._id, a._id, b._id, false, false, 1, 0),
    'direct-object': () => _native.gemm(c, a, b, false, false, 1, 0),
    matmul: () => matmul(a, b, { out: c }),
    'matmul-alloc': () => matmul(a, b).dispose(),
    tensor: () => empty([2, 2]).dispose(),
  }
  const f = ops[mode]
  void (async () => {
    for (let i = 0; i < 30000; i++) f()
    await _native.sync(0, 0)
    _native._debugSleep(0, 0, 10000)
    for (let i = 0; i < n; i++) f()
    process.exit(0)
  })()
}

function total(mode, n) {
  const r = spawnSync('valgrind', ['--tool=callgrind', '--callgrind-out-file=/dev/null', process.execPath, '--no-concurrent-recompilation', __filename, '--child', mode, String(n)], { encoding: 'utf8' })
  const m = /Collected : (\d+)/.exec(r.stderr ?? '')
  if (!m) throw new Error(`valgrind gave no count for ${mode} (is it installed?)\n${r.stderr}`)
  return Number(m[1])
}

if (process.argv[2] === '--child') child(process.argv[3], Number(process.argv[4]))
else
  for (const mode of (process.argv[2] ?? MODES.join(',')).split(',')) {
    if (!MODES.includes(mode)) throw new Error(`unknown mode ${mode}; expected ${MODES.join(', ')}`)
    const per = (total(mode, 12000) - total(mode, 2000)) / 10000
    console.log(`${mode.padEnd(14)} ${Math.round(per)} instructions of work per queued op`)
  }
