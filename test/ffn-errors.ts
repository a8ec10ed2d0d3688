// Bad input to DenseFFN and VersatileFFN: each a precise error with a stable code, state unchanged.
import t from 'tap'
import { DenseFFN, VersatileFFN, tensor, zeros } from '../lib/index'
import { rand } from './helpers/ffn-ref'

const opts = { dModel: 8, hidden: 32, experts: 4, topK: 2, maxDepth: 3 }
const x = () => tensor(Float32Array.from(rand(5 * 8, 1)), [5, 8])

t.test('constructor options', async (t) => {
  t.throws(() => new VersatileFFN({ ...opts, topK: 5 }), { code: 'ERR_ARGUMENT', message: /topK: expected at most experts \(4\), got 5/ }, 'K > N')
  t.throws(() => new VersatileFFN({ ...opts, topK: 0 }), { code: 'ERR_ARGUMENT' }, 'K = 0')
  t.throws(() => new VersatileFFN({ ...opts, maxDepth: 0 }), { code: 'ERR_ARGUMENT', message: /maxDepth/ }, 'L < 1')
  t.throws(() => new VersatileFFN({ ...opts, expertHidden: 9 }), { code: 'ERR_ARGUMENT', message: /4·9 = 36 > 32/ }, 'E·N > I')
  t.throws(() => new VersatileFFN({ ...opts, experts: 40, topK: 1 }), { code: 'ERR_ARGUMENT' }, 'N > I')
  t.throws(() => new VersatileFFN({ ...opts, dModel: 8.5 }), { code: 'ERR_ARGUMENT', message: /dModel/ }, 'fractional width')
  t.throws(() => new VersatileFFN({ ...opts, balanceLossWeight: -1 }), { code: 'ERR_ARGUMENT', message: /balanceLossWeight/ })
  t.throws(() => new VersatileFFN({ ...opts, dtype: 'int32' }), { code: 'ERR_DTYPE' })
  t.throws(() => new VersatileFFN({ ...opts, device: 'tpu' }), { code: 'ERR_DEVICE' })
  t.throws(() => new DenseFFN({ dModel: 0, hidden: 4 }), { code: 'ERR_ARGUMENT', message: /dModel/ })
  t.throws(() => new DenseFFN(undefined as never), { code: 'ERR_ARGUMENT' })
  const ok = new VersatileFFN({ ...opts, expertHidden: 8 })
  t.equal(ok.expertHidden, 8, 'E·N = I is allowed')
})

t.test('state dicts: missing, misshapen, unexpected, wrong dtype; nothing changes on error', async (t) => {
  const ffn = new VersatileFFN(opts)
  const before = await Promise.all(ffn.parameters().map((p) => p.data()))
  const sd = (): Record<string, Float32Array> => ({
    'ff_norm.weight': Float32Array.from(rand(8, 1)), 'ff_proj.weight': Float32Array.from(rand(64 * 8, 2)),
    'ff_out.weight': Float32Array.from(rand(8 * 32, 3)), 'expert_gate.weight': Float32Array.from(rand(4 * 8, 4)),
    'depth_predictor.weight': Float32Array.from(rand(3 * 8, 5)),
  })
  const { 'depth_predictor.weight': _, ...missing } = sd()
  t.throws(() => ffn.loadStateDict(missing), { code: 'ERR_ARGUMENT', message: /missing "depth_predictor.weight"/ })
  t.throws(() => ffn.loadStateDict({ ...sd(), 'ff_out.weight': new Float32Array(7) }), { code: 'ERR_SHAPE', message: /ff_out.weight: expected 256 values/ })
  t.throws(() => ffn.loadStateDict({ ...sd(), 'ff_out.weight': zeros([32, 8]) }), { code: 'ERR_SHAPE', message: /expected shape \[8, 32\], got \[32, 8\]/ })
  t.throws(() => ffn.loadStateDict({ ...sd(), 'ff_norm.weight': zeros([8], { dtype: 'int32' }) }), { code: 'ERR_DTYPE' })
  t.throws(() => ffn.loadStateDict({ ...sd(), 'attn_out.weight': new Float32Array(64) }), { code: 'ERR_ARGUMENT', message: /unexpected name/ })
  t.throws(() => ffn.loadStateDict({ ...sd(), 'ff_norm.weight': [1, 2] as never }), { code: 'ERR_ARGUMENT' })
  const gone = zeros([8])
  gone.dispose()
  t.throws(() => ffn.loadStateDict({ ...sd(), 'ff_norm.weight': gone }), { code: 'ERR_DISPOSED' })
  const after = await Promise.all(ffn.parameters().map((p) => p.data()))
  t.same(after.map((a) => Array.from(a)), before.map((a) => Array.from(a)), 'parameters unchanged')
  // a good state dict loads, and a bfloat16 tensor is converted
  const good = sd()
  ffn.loadStateDict({ ...good, 'ff_norm.weight': tensor(good['ff_norm.weight']).astype('bfloat16') })
  t.same(Array.from(await ffn.params['ff_proj.weight'].data()), Array.from(good['ff_proj.weight']), 'loaded')
  t.same(Object.keys(ffn.stateDict()), ['ff_norm.weight', 'ff_proj.weight', 'ff_out.weight', 'expert_gate.weight', 'depth_predictor.weight'])
})

t.test('forward and backward arguments', async (t) => {
  const ffn = new VersatileFFN(opts)
  const dense = new DenseFFN({ dModel: 8, hidden: 32 })
  for (const m of [ffn, dense] as const) {
    t.throws(() => m.forward(zeros([5, 7])), { code: 'ERR_SHAPE', message: /x: expected shape \[\.\.\., 8\] with every leading size >= 1, got \[5, 7\]/ })
    t.throws(() => m.forward(zeros([40])), { code: 'ERR_SHAPE' }, '1-D x')
    t.throws(() => m.forward(zeros([0, 8])), { code: 'ERR_SHAPE' }, 'T = 0')
    t.throws(() => m.forward(x().astype('bfloat16')), { code: 'ERR_DTYPE', message: /x: expected float32, got bfloat16/ })
    t.throws(() => m.forward(zeros([5, 8], { dtype: 'int32' })), { code: 'ERR_DTYPE' })
    t.throws(() => m.forward([1, 2] as never), { code: 'ERR_ARGUMENT' })
    const gone = x()
    gone.dispose()
    t.throws(() => m.forward(gone), { code: 'ERR_DISPOSED' })
    t.throws(() => m.forward(x(), { train: 1 as never }), { code: 'ERR_ARGUMENT', message: /train/ })
  }
  t.throws(() => ffn.forward(x(), { train: true, noise: 'uniform' as never }), { code: 'ERR_ARGUMENT', message: /noise/ })
  t.throws(() => ffn.forward(x(), { train: true, step: -1 }), { code: 'ERR_ARGUMENT', message: /step/ })
  t.throws(() => ffn.forward(x(), { train: true, seed: -3 }), { code: 'ERR_ARGUMENT', message: /seed/ })
  // a transposed (non-contiguous) x is accepted and read correctly
  const xs = x()
  const xt = tensor(Float32Array.from(await xs.data()), [5, 8]).T.contiguous().T
  t.same(Array.from(await ffn.forward(xt).y.data()), Array.from(await ffn.forward(xs).y.data()), 'strided x')

  const tr = ffn.forward(x(), { train: true })
  const other = new VersatileFFN(opts)
  t.throws(() => other.backward(tr, zeros([5, 8])), { code: 'ERR_ARGUMENT', message: /another module/ })
  t.throws(() => ffn.backward(tr, zeros([4, 8])), { code: 'ERR_SHAPE', message: /dy: expected shape \[5, 8\]/ })
  t.throws(() => ffn.backward(tr, zeros([5, 8], { dtype: 'bfloat16' })), { code: 'ERR_DTYPE' })
  t.throws(() => ffn.backward({ y: zeros([1]) } as never, zeros([5, 8])), { code: 'ERR_ARGUMENT', message: /record/ })
  t.throws(() => ffn.backward(tr, zeros([5, 8]), { auxGrad: NaN }), { code: 'ERR_ARGUMENT', message: /auxGrad/ })
  const g0 = await Promise.all(Object.values(ffn.grads).map((g) => g.data()))
  t.ok(g0.every((g) => g.every((v) => v === 0)), 'failed backward calls left the gradients alone')
  ffn.backward(tr, zeros([5, 8]).fill_(1), { retain: true })
  ffn.backward(tr, zeros([5, 8]).fill_(1))
  t.throws(() => ffn.backward(tr, zeros([5, 8])), { code: 'ERR_ARGUMENT', message: /disposed or used/ })
  const tr2 = ffn.forward(x(), { train: true })
  tr2.dispose()
  tr2.dispose()
  t.throws(() => ffn.backward(tr2, zeros([5, 8])), { code: 'ERR_ARGUMENT' }, 'disposed record')
  ffn.zeroGrad()
  t.ok((await Promise.all(Object.values(ffn.grads).map((g) => g.data()))).every((g) => g.every((v) => v === 0)), 'zeroGrad')
})
