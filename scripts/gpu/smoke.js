// the first step of the GPU check (scripts/gpu-check.sh run): what the machine is, and one small
// CPU/CUDA parity check, in seconds. prints one JSON line; exit 0 only when CUDA works and agrees.
//   node smoke.js <folder of the compiled lib>
'use strict'
const path = require('path')

const out = { ok: false, node: process.version }
try {
  const lib = require(path.resolve(process.argv[2] || '.', 'index.js'))
  out.available = lib.cuda.available()
  out.reason = lib.cuda.reason ? lib.cuda.reason() : undefined
  out.devices = lib.cuda.deviceCount()
  if (!out.available) throw new Error(`CUDA is not available: ${out.reason}`)
  // a ragged float32 and bfloat16 product against the CPU oracle (tf32 / bf16 inputs: 3e-3)
  const check = async (dtype) => {
    const a = lib.randn([67, 129], { seed: 1 }).astype(dtype), b = lib.randn([129, 45], { seed: 2 }).astype(dtype)
    const want = await lib.matmul(a, b).data()
    const got = await lib.matmul(a.to('cuda'), b.to('cuda')).data()
    let num = 0, den = 0
    for (let i = 0; i < want.length; i++) {
      num += (got[i] - want[i]) ** 2
      den += want[i] ** 2
    }
    return Math.sqrt(num / den)
  }
  ;(async () => {
    out.parity = { float32: await check('float32'), bfloat16: await check('bfloat16') }
    out.ok = out.parity.float32 <= 3e-3 && out.parity.bfloat16 <= 3e-3
    if (!out.ok) out.reason = 'CUDA matmul disagrees with the CPU'
    console.log(JSON.stringify(out))
    process.exitCode = out.ok ? 0 : 1
  })().catch((e) => {
    out.error = String(e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e)
    console.log(JSON.stringify(out))
    process.exitCode = 1
  })
} catch (e) {
  out.error = String(e && e.message ? e.message : e)
  console.log(JSON.stringify(out))
  process.exitCode = 1
}
