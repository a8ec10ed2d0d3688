// The small-M (decoding) GEMM kernel in use, and the AVX-512 one against the AVX2 one: the same
// products run here and in a child with VFFN_GEMM_KERNEL=avx2 must give the same bits, so a
// request's tokens do not depend on the machine's vector width. Covers M = 3..8 (where AVX-512
// runs), float32 and bfloat16 B^T, K with and without a tail, across 512-element blocks, and N
// that leaves columns for the AVX2 kernel.
import t from 'tap'
import { runSelf } from './helpers/child'
import { mulberry32 } from '../lib/random'
import { tensor, matmul, _native } from '../lib/index'

const CHILD = process.env.VFFN_GEMM_ISA_CHILD === '1'

function values(n: number, seed: number): Float32Array {
  const r = mulberry32(seed)
  return Float32Array.from({ length: n }, () => r() * 2 - 1)
}

const SHAPES: [number, number][] = [[37, 300], [70, 1031], [41, 2048], [19, 2049], [23, 4100], [9, 16], [6, 7]]

// every case's output bits, hex, keyed by its name
async function products(): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  let seed = 11
  for (const [N, K] of SHAPES)
    for (const dtype of ['float32', 'bfloat16'] as const)
      for (let M = 3; M <= 8; M++) {
        const a = tensor(values(M * K, (seed += 3)), [M, K])
        const b = tensor(values(N * K, (seed += 3)), [N, K], { dtype })
        const c = await matmul(a, b, { transposeB: true }).data()
        out[`[${M}x${K}]x[${K}x${N}]^T ${dtype}`] = Buffer.from(c.buffer, c.byteOffset, c.byteLength).toString('hex')
        a.dispose()
        b.dispose()
      }
  return out
}

if (CHILD) {
  void products().then((p) => process.stdout.write(`${JSON.stringify({ kernel: _native.kernelInfo().gemmSmall, p })}\n`))
} else {
  t.test('the small-M kernel in use is named', async (t) => {
    t.match(_native.kernelInfo().gemmSmall, /^(avx512|avx2|portable)$/)
    if (_native.kernelInfo().gemm === 'portable') t.equal(_native.kernelInfo().gemmSmall, 'portable', 'portable GEMM, portable small-M kernel')
  })

  const here = _native.kernelInfo().gemmSmall
  t.test('the AVX-512 small-M kernel gives the AVX2 kernel\'s bits', { skip: here === 'avx512' ? false : `this machine runs the ${here} small-M kernel` }, async (t) => {
    const mine = await products()
    const r = runSelf(__filename, { VFFN_GEMM_KERNEL: 'avx2', VFFN_GEMM_ISA_CHILD: '1' })
    if (r.status !== 0) t.comment(r.stderr.slice(-2000))
    t.equal(r.status, 0, 'child exits 0')
    const child = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { kernel: string; p: Record<string, string> }
    t.equal(child.kernel, 'avx2', 'VFFN_GEMM_KERNEL=avx2 selects the AVX2 small-M kernel')
    t.same(Object.keys(child.p), Object.keys(mine), 'the same cases')
    const differ = Object.keys(mine).filter((k) => mine[k] !== child.p[k])
    t.same(differ, [], `all ${Object.keys(mine).length} products are the same bits`)
  })
}
