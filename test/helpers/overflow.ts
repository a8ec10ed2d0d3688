// run as a child process by test/teardown.ts: hand-built tensors whose sizes overflow int64 in
// the bounds check must be argument errors, never memory accesses
import { _native } from '../../lib/index'

const N = _native
const h = () => N.alloc(0, 0, 16)
const cases: [string, () => unknown][] = [
  ['fill 2^62', () => N.fill({ _id: h(), _dt: 0, offset: 0, shape: [2 ** 62], strides: [4] }, 1)],
  ['fill 2^62 x 2^62 strides 0', () => N.fill({ _id: h(), _dt: 0, offset: 0, shape: [2 ** 62, 2 ** 62], strides: [0, 0] }, 1)],
  ['fill stride 2^62', () => N.fill({ _id: h(), _dt: 0, offset: 0, shape: [3], strides: [2 ** 62] }, 1)],
  ['fill offset 2^62', () => N.fill({ _id: h(), _dt: 0, offset: 2 ** 62, shape: [1], strides: [1] }, 1)],
  ['fill 1e300', () => N.fill({ _id: h(), _dt: 0, offset: 0, shape: [1e300], strides: [1] }, 1)],
  ['read 2^40 x 2^40 strides 0', () => N.read({ _id: h(), _dt: 0, offset: 0, shape: [2 ** 40, 2 ** 40], strides: [0, 0] })],
  ['fill bad dtype', () => N.fill({ _id: h(), _dt: 7, offset: 0, shape: [1], strides: [1] }, 1)],
]
for (const [name, fn] of cases) {
  try {
    const r = fn()
    if (r instanceof Promise) r.catch(() => undefined)
    console.log(`${name}: accepted`)
  } catch (e) {
    console.log(`${name}: ${(e as { code?: string }).code} ${(e as Error).message}`)
  }
}
