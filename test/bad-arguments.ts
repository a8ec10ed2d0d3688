// The bad-argument sweep: every export, every argument and option key, fed wrong types, null, NaN,
// ±Infinity, negative, fractional and huge values and misspelled keys. Each must fail with a
// VffnError whose code is stable and whose message names the argument, allocating nothing.
import t from 'tap'
import { unlinkSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import * as lib from '../lib/index'
import {
  AdamW, CausalSelfAttention, DenseFFN, Device, LoopFFN, MoEFFN, GenerationEngine, Tensor, TransformerBlock, TransformerLM, VersatileFFN, VffnError,
  adamwStep, attention, kvWrite, pagedAttention, ropeRows, sample, attentionBackward, axpy, cosineLR, crossEntropy, crossEntropyBackward, device, embedding,
  embeddingBackward, empty, full, gradNorm, gumbelTemperature, stretchedTemperature, loadSafetensors, matmul, parseSafetensors, randn, rope,
  saveSafetensors, setNumThreads, getNumThreads, setSpinWait, tensor, trainStep, zeros, saveCheckpoint, loadCheckpoint, TokenDataset, TokenLoader, GPT2Tokenizer, evaluate,
} from '../lib/index'
import { writeBin } from './helpers/token-files'

type Bad = [label: string, value: unknown]
/** A positional argument and its bad values, or an options argument with the bad values of each key. */
type Param = { name: string; bad: Bad[] } | { name: string; options: Record<string, Bad[]>; bad?: Bad[] }
interface Row {
  /** the export: a function, `Class` (its constructor), `Class.method` or `Class.static` */
  fn: string
  /** a fresh receiver and valid arguments (the valid call must succeed, so each failure is the bad value's) */
  make: () => { call: (...a: never[]) => unknown; args: unknown[] }
  params: Param[]
}

// ---- bad values by kind
const BASE: Bad[] = [['a string', 'x'], ['an object', {}], ['null', null], ['a function', () => 1], ['a symbol', Symbol('s')], ['a bigint', 1n]]
const NONFINITE: Bad[] = [['NaN', NaN], ['Infinity', Infinity], ['-Infinity', -Infinity]]
const HUGE: Bad[] = [['2^53', 2 ** 53], ['1e300', 1e300]]
const int = (min = 0, max = 2 ** 53 - 1): Bad[] => [
  ...BASE, ['a boolean', true], ['an array', [1]], ['a numeric string', '1'], ...NONFINITE, ['fractional', min + 0.5], ['below the minimum', min - 1],
  ...(max < 2 ** 53 - 1 ? [['above the maximum', max + 1] as Bad] : []), ...HUGE, ['-1e300', -1e300],
]
const num = (o: { min?: number; exclusiveMin?: number; finite?: boolean } = {}): Bad[] => [
  ...BASE, ['a boolean', true], ['an array', [1]], ['a numeric string', '1'], ['NaN', NaN],
  ...(o.finite === false ? [] : NONFINITE.slice(1)),
  ...(o.min !== undefined ? [['below the minimum', o.min - 1] as Bad, ['-1e300', -1e300] as Bad] : []),
  ...(o.exclusiveMin !== undefined ? [['the exclusive minimum', o.exclusiveMin] as Bad, ['negative', -1] as Bad] : []),
]
const bool: Bad[] = [...BASE, ['1', 1], ['0', 0], ['NaN', NaN], ['"true"', 'true'], ['"yes"', 'yes']]
const str: Bad[] = [['a number', 1], ['null', null], ['an object', {}], ['a boolean', true], ['a symbol', Symbol('s')]]
const oneOf = (near: string): Bad[] => [['a near miss', near], ['a number', 1], ['null', null], ['an object', {}], ['NaN', NaN], ['a boolean', false]]
const dev: Bad[] = [['an unknown device', 'tpu'], ['"cuda:x"', 'cuda:x'], ['a number', 0], ['null', null], ['an object', {}], ['NaN', NaN]]
const seed: Bad[] = [...BASE.filter(([l]) => l !== 'a bigint'), ['NaN', NaN], ['Infinity', Infinity], ['negative', -1], ['fractional', 1.5], ...HUGE, ['a negative bigint', -1n], ['2^64', 2n ** 64n]]
const gone = () => {
  const x = zeros([2])
  x.dispose()
  return x
}
const tens = (...extra: Bad[]): Bad[] => [
  ['null', null], ['a string', 'x'], ['a number', 1], ['NaN', NaN], ['an object', {}], ['an array', [1, 2]], ['a Float32Array', new Float32Array(4)],
  ['a disposed tensor', gone()], ...extra,
]
const shape: Bad[] = [
  ['null', null], ['a number', 12], ['a string', 'x'], ['an object', {}], ['a negative size', [-1]], ['a fractional size', [1.5]], ['NaN', [NaN]],
  ['Infinity', [Infinity]], ['2^53 elements', [2 ** 27, 2 ** 26]], ['a 1e300 size', [1e300]], ['seven dimensions', [1, 1, 1, 1, 1, 1, 1]], ['a string size', ['2']],
]
const objectBad: Bad[] = [['null', null], ['a string', 'x'], ['a number', 1], ['an array', []], ['a Map', new Map()]]
// an omitted options object means every default; null and non-objects are errors
const opts = (options: Record<string, Bad[]>, name = 'opts'): Param => ({ name, options, bad: objectBad })

// ---- fixtures (tiny sizes: the sweep makes thousands of calls)
const f = (shape: number[], seed = 1) => randn(shape, { seed })
const ids = (vals: number[], shape = [vals.length]) => tensor(Int32Array.from(vals), shape)
const ffnOpts = { dModel: 8, hidden: 16, experts: 2, topK: 1, maxDepth: 2 }
const moeOpts = { dModel: 8, experts: 2, topK: 1, expertHidden: 4 }
const lmOpts = { vocabSize: 11, dModel: 8, nLayers: 1, nHeads: 2, hidden: 16, experts: 2, topK: 1, maxDepth: 2, maxSeqLen: 8 }
const lm = () => new TransformerLM(lmOpts)
const attn = () => {
  const p = { 'att_proj.weight': f([24, 8]), 'attn_out.weight': f([8, 8]) }
  const g = { 'att_proj.weight': zeros([24, 8]), 'attn_out.weight': zeros([8, 8]) }
  return new CausalSelfAttention(8, 2, p, g)
}
const block = () => new TransformerBlock(attn(), new VersatileFFN(ffnOpts), full([8], 1))
const dir = tmpdir()
const ckpt = join(dir, `vffn-bad-args-${process.pid}.safetensors`)
t.teardown(() => unlinkSync(ckpt))
const trainCkpt = join(dir, `vffn-bad-args-train-${process.pid}.safetensors`)
t.teardown(() => unlinkSync(trainCkpt))
const tokFile = join(dir, `vffn-bad-args-${process.pid}.bin`)
writeBin(tokFile, Array.from({ length: 200 }, (_, i) => (i * 7) % 11))
t.teardown(() => unlinkSync(tokFile))
const datasets: TokenDataset[] = []
const dataset = () => {
  const d = TokenDataset.open(tokFile)
  datasets.push(d)
  return d
}
t.teardown(() => datasets.forEach((d) => d.close()))
const LOADER: Record<string, Bad[]> = {
  batchSize: int(1, 1 << 20), seqLen: int(1, 1 << 24), order: oneOf('shufle'), seed: int(0, 2 ** 32 - 1), rank: int(0, 1 << 20), worldSize: int(1, 1 << 20), device: dev,
}

const STOP_TOKENS: Bad[] = [['null', null], ['a string', 'x'], ['a number', 1], ['an object', {}], ['[1.5]', [1.5]], ['[2^31]', [2 ** 31]], ['[null]', [null]]]
const FFN_FWD = { train: bool, step: int(), noise: oneOf('gumbell'), seed, tau: num({ exclusiveMin: 0 }) }
const LM_OPTS: Record<string, Bad[]> = {
  vocabSize: int(1), dModel: int(2), nLayers: int(1), nHeads: int(1), hidden: int(1), maxSeqLen: int(1), ffn: oneOf('dens'), loops: int(1),
  experts: int(1), topK: int(1), maxDepth: int(1), expertHidden: int(1), balanceLossWeight: num({ min: 0 }), device: dev,
  dtype: oneOf('float'), seed: int(), precision: oneOf('bf16'), recompute: oneOf('blok'),
}

const ROWS: Row[] = [
  { fn: 'device', make: () => ({ call: device, args: ['cpu'] }), params: [{ name: 'device', bad: dev }] },
  { fn: 'Device.get', make: () => ({ call: Device.get, args: ['cpu'] }), params: [{ name: 'device', bad: dev }] },
  { fn: 'setSpinWait', make: () => ({ call: setSpinWait, args: [setSpinWait()] }), params: [{ name: 'microseconds', bad: int(0, 100000) }] },
  { fn: 'setNumThreads', make: () => ({ call: setNumThreads, args: [getNumThreads()] }), params: [{ name: 'threads', bad: int(0, 256) }] },
  {
    fn: 'tensor', make: () => ({ call: tensor, args: [[1, 2, 3, 4], [2, 2], {}] }),
    params: [
      { name: 'data', bad: [['null', null], ['a string', 'x'], ['a number', 1], ['an object', {}], ['a null entry', [null]], ['a string entry', ['1']], ['a ragged array', [[1], [2, 3]]], ['a bigint entry', [1n]]] },
      { name: 'shape', bad: [...shape, ['a mismatched shape', [3]]] },
      opts({ dtype: oneOf('float'), device: dev }),
    ],
  },
  {
    fn: 'tensor', make: () => ({ call: tensor, args: [[1, 2], undefined, { dtype: 'int32' }] }),
    params: [{ name: 'data', bad: [['3e9', [3e9]], ['-3e9', [-3e9]], ['2^31', [2 ** 31]], ['1.5', [1.5]], ['NaN', [NaN]], ['Infinity', [Infinity]], ['2^53', [2 ** 53]]] }],
  },
  {
    fn: 'tensor', make: () => ({ call: tensor, args: [new Float32Array([1, 2]), [2], { dtype: 'int32' }] }),
    params: [{ name: 'data', bad: [['3e9', new Float32Array([3e9])], ['1.5', new Float32Array([1.5])], ['NaN', new Float32Array([NaN])], ['Infinity', new Float32Array([Infinity])]] }],
  },
  { fn: 'empty', make: () => ({ call: empty, args: [[2, 3], {}] }), params: [{ name: 'shape', bad: shape }, opts({ dtype: oneOf('int'), device: dev })] },
  { fn: 'zeros', make: () => ({ call: zeros, args: [[2, 3], {}] }), params: [{ name: 'shape', bad: shape }, opts({ dtype: oneOf('bfloat'), device: dev })] },
  {
    fn: 'full', make: () => ({ call: full, args: [[2], 1, {}] }),
    params: [{ name: 'shape', bad: shape }, { name: 'value', bad: [['a string', '1'], ['null', null], ['an object', {}], ['a boolean', true], ['a bigint', 1n]] }, opts({ dtype: oneOf('float3'), device: dev })],
  },
  {
    fn: 'full', make: () => ({ call: full, args: [[2], 1, { dtype: 'int32' }] }),
    params: [{ name: 'shape', bad: [] }, { name: 'value', bad: int(-(2 ** 31), 2 ** 31 - 1) }],
  },
  {
    fn: 'randn', make: () => ({ call: randn, args: [[3], {}] }),
    params: [
      { name: 'shape', bad: shape },
      opts({ dtype: [...oneOf('float'), ['int32', 'int32']], device: dev, seed, mean: num(), std: num({ min: 0 }), truncate: [...num({ min: 0 }), ['1e-6 (too small to be exact)', 1e-6], ['0.05', 0.05]] }),
    ],
  },
  { fn: 'Tensor.to', make: () => { const x = f([2]); return { call: (d, dt) => x.to(d, dt), args: ['cpu', 'float32'] } }, params: [{ name: 'device', bad: dev }, { name: 'dtype', bad: [...oneOf('float'), ['int32 from float', 'int32']] }] },
  { fn: 'Tensor.astype', make: () => { const x = f([2]); return { call: (dt) => x.astype(dt), args: ['bfloat16'] } }, params: [{ name: 'dtype', bad: oneOf('bfloat') }] },
  {
    fn: 'Tensor.slice', make: () => { const x = f([3, 4]); return { call: (d, s, e) => x.slice(d, s, e), args: [1, 1, 3] } },
    params: [{ name: 'dim', bad: int(0, 1) }, { name: 'slice', bad: int(0, 3) }, { name: 'slice', bad: int(1, 4) }],
  },
  { fn: 'Tensor.rows', make: () => { const x = f([3, 4]); return { call: (s, e) => x.rows(s, e), args: [0, 2] } }, params: [{ name: 'slice', bad: int(0, 2) }, { name: 'slice', bad: int(0, 3) }] },
  { fn: 'Tensor.cols', make: () => { const x = f([3, 4]); return { call: (s, e) => x.cols(s, e), args: [0, 2] } }, params: [{ name: 'slice', bad: int(0, 2) }, { name: 'slice', bad: int(0, 4) }] },
  {
    fn: 'Tensor.reshape', make: () => { const x = f([3, 4]); return { call: (s) => x.reshape(s), args: [[4, -1]] } },
    params: [{ name: 'shape', bad: [...shape.filter(([l]) => l !== 'a negative size'), ['a wrong element count', [5]], ['two -1 sizes', [-1, -1]], ['-2', [-2, -6]]] }],
  },
  { fn: 'Tensor.fill_', make: () => { const x = zeros([2]); return { call: (v) => x.fill_(v), args: [NaN] } }, params: [{ name: 'value', bad: [['a string', '1'], ['null', null], ['an object', {}], ['a boolean', true], ['a bigint', 1n]] }] },
  { fn: 'Tensor.fill_', make: () => { const x = zeros([2], { dtype: 'int32' }); return { call: (v) => x.fill_(v), args: [-(2 ** 31)] } }, params: [{ name: 'value', bad: int(-(2 ** 31), 2 ** 31 - 1) }] },
  { fn: 'Tensor.copy_', make: () => { const x = zeros([2]); return { call: (s) => x.copy_(s), args: [f([2])] } }, params: [{ name: 'src', bad: tens(['a tensor of 3 elements', zeros([3])], ['an int32 tensor', zeros([2], { dtype: 'int32' })]) }] },
  { fn: 'Tensor.intData', make: () => { const x = zeros([2], { dtype: 'int32' }); return { call: () => x.intData(), args: [] } }, params: [] },
  { fn: 'Tensor.floatData', make: () => { const x = zeros([2]); return { call: () => x.floatData(), args: [] } }, params: [] },
  { fn: 'Tensor.rawData', make: () => { const x = zeros([2], { dtype: 'bfloat16' }); return { call: () => x.rawData(), args: [] } }, params: [] },
  {
    fn: 'matmul', make: () => ({ call: matmul, args: [f([2, 3]), f([3, 4]), {}] }),
    params: [
      { name: 'a', bad: tens(['a 1-D tensor', f([3])], ['an int32 tensor', zeros([2, 3], { dtype: 'int32' })]) },
      { name: 'b', bad: tens(['a mismatched tensor', f([4, 4])]) },
      opts({ transposeA: bool, transposeB: bool, alpha: num(), beta: num(), out: tens(['a misshapen out', zeros([3, 3])]) }),
    ],
  },
  {
    fn: 'embedding', make: () => ({ call: embedding, args: [f([5, 4]), ids([1, 2, 3]), undefined] }),
    params: [{ name: 'weight', bad: tens(['a 1-D tensor', f([5])]) }, { name: 'tokens', bad: tens(['a float tensor', f([3])]) }, { name: 'out', bad: tens(['a misshapen out', zeros([2, 4])]) }],
  },
  {
    fn: 'embeddingBackward', make: () => ({ call: embeddingBackward, args: [zeros([5, 4]), f([3, 4]), ids([1, 2, 3])] }),
    params: [{ name: 'dweight', bad: tens() }, { name: 'dout', bad: tens() }, { name: 'tokens', bad: tens(['a float tensor', f([3])]) }],
  },
  {
    fn: 'rope', make: () => ({ call: rope, args: [f([1, 2, 8]), 2, 0, {}] }),
    params: [{ name: 'x', bad: tens(['a 2-D tensor', f([2, 8])]) }, { name: 'heads', bad: int(1) }, { name: 'posOffset', bad: int() }, opts({ theta: num({ exclusiveMin: 0 }), inverse: bool })],
  },
  {
    fn: 'attention', make: () => ({ call: attention, args: [f([1, 3, 8]), f([1, 3, 8], 2), f([1, 3, 8], 3), 2, {}] }),
    params: [
      { name: 'q', bad: tens() }, { name: 'k', bad: tens() }, { name: 'v', bad: tens() }, { name: 'heads', bad: int(1) },
      opts({ qOffset: int(), scale: num(), out: tens(['a misshapen out', zeros([1, 2, 8])]) }),
    ],
  },
  {
    fn: 'attentionBackward', make: () => {
      const q = f([1, 3, 8]), k = f([1, 3, 8], 2), v = f([1, 3, 8], 3)
      const { out, lse } = attention(q, k, v, 2)
      return { call: attentionBackward, args: [{ dq: zeros([1, 3, 8]), dk: zeros([1, 3, 8]), dv: zeros([1, 3, 8]) }, f([1, 3, 8], 4), { q, k, v, out, lse }, 2, {}] }
    },
    params: [{ name: 'grads', bad: objectBad }, { name: 'dout', bad: tens() }, { name: 'saved', bad: objectBad }, { name: 'heads', bad: int(1) }, opts({ qOffset: int(), scale: num() })],
  },
  {
    fn: 'crossEntropy', make: () => ({ call: crossEntropy, args: [f([3, 5]), ids([0, 1, 4]), -100] }),
    params: [{ name: 'logits', bad: tens() }, { name: 'targets', bad: tens(['a float tensor', f([3])]) }, { name: 'ignoreIndex', bad: int(-(2 ** 31), 2 ** 31 - 1) }],
  },
  {
    fn: 'crossEntropyBackward', make: () => {
      const logits = f([3, 5]), targets = ids([0, 1, 4])
      return { call: crossEntropyBackward, args: [logits, targets, crossEntropy(logits, targets).lse, 1, -100, undefined] }
    },
    params: [
      { name: 'logits', bad: tens() }, { name: 'targets', bad: tens() }, { name: 'lse', bad: tens(['a misshapen lse', zeros([2])]) }, { name: 'dloss', bad: num() },
      { name: 'ignoreIndex', bad: int(-(2 ** 31), 2 ** 31 - 1) }, { name: 'out', bad: tens(['a misshapen out', zeros([3, 4])]) },
    ],
  },
  { fn: 'gradNorm', make: () => ({ call: gradNorm, args: [[f([3])], 1] }), params: [{ name: 'grads', bad: [...objectBad, ['an empty array', []], ['[null]', [null]]] }, { name: 'maxNorm', bad: num() }] },
  {
    fn: 'adamwStep', make: () => ({ call: adamwStep, args: [f([3]), f([3], 2), zeros([3]), zeros([3]), { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 1 }, undefined, undefined] }),
    params: [
      { name: 'param', bad: tens() }, { name: 'grad', bad: tens() }, { name: 'm', bad: tens() }, { name: 'v', bad: tens() },
      { name: 'h', bad: objectBad, options: { lr: num({ min: 0 }), beta1: num({ min: 0 }), beta2: [...num({ min: 0 }), ['1', 1]], eps: num({ exclusiveMin: 0 }), weightDecay: num({ min: 0 }), step: int(1) } },
      { name: 'clip', bad: tens() }, { name: 'copy', bad: tens(['a float32 copy', f([3])], ['a copy of 2 elements', zeros([2], { dtype: 'bfloat16' })]) },
    ],
  },
  {
    fn: 'kvWrite', make: () => ({ call: kvWrite, args: [f([2, 2, 8]), f([2, 2, 8], 2), f([3, 8], 3), f([3, 8], 4), ids([0, 1, 3])] }),
    params: [
      { name: 'kPool', bad: tens(['a 2-D pool', f([4, 8])]) }, { name: 'vPool', bad: tens(['a pool of another shape', f([2, 3, 8])]) },
      { name: 'k', bad: tens(['rows of another width', f([3, 4])]) }, { name: 'v', bad: tens(['another shape than k', f([2, 8])]) },
      { name: 'slots', bad: tens(['a float tensor', f([3])], ['too few slots', ids([0, 1])]) },
    ],
  },
  {
    fn: 'pagedAttention', make: () => ({ call: pagedAttention, args: [f([2, 1, 8]), f([2, 2, 8], 2), f([2, 2, 8], 3), ids([0, 1, 1, 0], [2, 2]), ids([1, 3]), 2, {}] }),
    params: [
      { name: 'q', bad: tens(['rows of another width', f([2, 1, 4])]) }, { name: 'kPool', bad: tens() }, { name: 'vPool', bad: tens() },
      { name: 'blockTable', bad: tens(['a float tensor', f([2, 2])], ['one row', ids([0, 1], [1, 2])]) }, { name: 'lens', bad: tens(['three lengths', ids([1, 1, 1])]) },
      { name: 'heads', bad: int(1) }, opts({ scale: num() }),
    ],
  },
  {
    fn: 'ropeRows', make: () => ({ call: ropeRows, args: [f([2, 2, 8]), 2, ids([0, 5]), {}] }),
    params: [{ name: 'x', bad: tens(['a 2-D tensor', f([2, 8])]) }, { name: 'heads', bad: int(1) }, { name: 'starts', bad: tens(['one start', ids([0])]) }, opts({ theta: num({ exclusiveMin: 0 }) })],
  },
  {
    fn: 'sample', make: () => ({ call: sample, args: [f([2, 5]), tensor(Float32Array.from([0, 0, 1, 0, 1, 2, 0.9, 0.5]), [2, 4])] }),
    params: [{ name: 'logits', bad: tens(['a 1-D tensor', f([5])]) }, { name: 'params', bad: tens(['three columns', f([2, 3])]) }],
  },
  { fn: 'axpy', make: () => ({ call: axpy, args: [zeros([3]), f([3]), 1] }), params: [{ name: 'y', bad: tens() }, { name: 'x', bad: tens(['a tensor of 2 elements', f([2])]) }, { name: 'alpha', bad: num() }] },
  {
    fn: 'DenseFFN', make: () => ({ call: (o) => new DenseFFN(o), args: [{ dModel: 8, hidden: 16 }] }),
    params: [{ name: 'opts', bad: [...objectBad, ['undefined', undefined]], options: { dModel: int(1), hidden: int(1), device: dev, dtype: oneOf('float'), seed: int(), precision: oneOf('bf16'), recompute: oneOf('fnn') } }],
  },
  { fn: 'DenseFFN.forward', make: () => { const m = new DenseFFN({ dModel: 8, hidden: 16 }); return { call: (x, o) => m.forward(x, o), args: [f([3, 8]), {}] } }, params: [{ name: 'x', bad: tens() }, opts(FFN_FWD)] },
  {
    fn: 'DenseFFN.backward', make: () => { const m = new DenseFFN({ dModel: 8, hidden: 16 }); return { call: (r, dy, o) => m.backward(r, dy, o), args: [m.forward(f([3, 8]), { train: true }), f([3, 8], 2), {}] } },
    params: [{ name: 'tr', bad: objectBad }, { name: 'dy', bad: tens(['a misshapen dy', f([2, 8])]) }, opts({ retain: bool })],
  },
  {
    fn: 'DenseFFN.loadStateDict', make: () => { const m = new DenseFFN({ dModel: 8, hidden: 16 }); return { call: (sd) => m.loadStateDict(sd), args: [m.stateDict()] } },
    params: [{ name: 'stateDict', bad: [['null', null], ['a string', 'x'], ['a number', 1]] }],
  },
  {
    fn: 'VersatileFFN', make: () => ({ call: (o) => new VersatileFFN(o), args: [{ ...ffnOpts }] }),
    params: [{
      name: 'opts', bad: [...objectBad, ['undefined', undefined]],
      options: { dModel: int(1), hidden: int(1), experts: int(1), topK: int(1), maxDepth: int(1), expertHidden: int(1), balanceLossWeight: num({ min: 0 }), device: dev, dtype: oneOf('float'), seed: int(), precision: oneOf('bf16'), recompute: oneOf('block') },
    }],
  },
  { fn: 'VersatileFFN.forward', make: () => { const m = new VersatileFFN(ffnOpts); return { call: (x, o) => m.forward(x, o), args: [f([3, 8]), { train: true }] } }, params: [{ name: 'x', bad: tens() }, opts(FFN_FWD)] },
  {
    fn: 'VersatileFFN.backward', make: () => { const m = new VersatileFFN(ffnOpts); return { call: (r, dy, o) => m.backward(r, dy, o), args: [m.forward(f([3, 8]), { train: true }), f([3, 8], 2), {}] } },
    params: [{ name: 'tr', bad: objectBad }, { name: 'dy', bad: tens() }, opts({ retain: bool, auxGrad: num() })],
  },
  {
    fn: 'MoEFFN', make: () => ({ call: (o) => new MoEFFN(o), args: [{ ...moeOpts }] }),
    params: [{
      name: 'opts', bad: [...objectBad, ['undefined', undefined]],
      options: { dModel: int(1), experts: int(1), topK: int(1), expertHidden: [...int(1), ['2^31 stacked columns', 2 ** 30]], balanceLossWeight: num({ min: 0 }), device: dev, dtype: oneOf('float'), seed: int(), recompute: oneOf('block') },
    }],
  },
  { fn: 'MoEFFN.forward', make: () => { const m = new MoEFFN(moeOpts); return { call: (x, o) => m.forward(x, o), args: [f([3, 8]), { train: true }] } }, params: [{ name: 'x', bad: tens(['a tensor of another width', f([3, 4])]) }, opts(FFN_FWD)] },
  {
    fn: 'MoEFFN.backward', make: () => { const m = new MoEFFN(moeOpts); return { call: (r, dy, o) => m.backward(r, dy, o), args: [m.forward(f([3, 8]), { train: true }), f([3, 8], 2), {}] } },
    params: [{ name: 'tr', bad: objectBad }, { name: 'dy', bad: tens(['a misshapen dy', f([2, 8])]) }, opts({ retain: bool, auxGrad: num() })],
  },
  {
    fn: 'LoopFFN', make: () => ({ call: (o) => new LoopFFN(o), args: [{ dModel: 8, hidden: 16, loops: 2 }] }),
    params: [{ name: 'opts', bad: [...objectBad, ['undefined', undefined]], options: { dModel: int(1), hidden: int(1), loops: int(1), device: dev, dtype: oneOf('float'), seed: int(), recompute: oneOf('block') } }],
  },
  { fn: 'LoopFFN.forward', make: () => { const m = new LoopFFN({ dModel: 8, hidden: 16, loops: 2 }); return { call: (x, o) => m.forward(x, o), args: [f([3, 8]), {}] } }, params: [{ name: 'x', bad: tens() }, opts(FFN_FWD)] },
  {
    fn: 'LoopFFN.backward', make: () => { const m = new LoopFFN({ dModel: 8, hidden: 16, loops: 2 }); return { call: (r, dy, o) => m.backward(r, dy, o), args: [m.forward(f([3, 8]), { train: true }), f([3, 8], 2), {}] } },
    params: [{ name: 'tr', bad: objectBad }, { name: 'dy', bad: tens(['a misshapen dy', f([2, 8])]) }, opts({ retain: bool })],
  },
  { fn: 'gumbelTemperature', make: () => ({ call: gumbelTemperature, args: [3] }), params: [{ name: 'step', bad: int() }] },
  { fn: 'stretchedTemperature', make: () => ({ call: stretchedTemperature, args: [3, 10] }), params: [{ name: 'step', bad: int() }, { name: 'totalSteps', bad: int(1) }] },
  {
    fn: 'CausalSelfAttention', make: () => ({ call: (d, h, p, g) => new CausalSelfAttention(d, h, p, g), args: [8, 2, { 'att_proj.weight': f([24, 8]), 'attn_out.weight': f([8, 8]) }, { 'att_proj.weight': zeros([24, 8]), 'attn_out.weight': zeros([8, 8]) }] }),
    params: [{ name: 'dModel', bad: int(1) }, { name: 'nHeads', bad: [...int(1), ['3 (does not divide 8)', 3]] }, { name: 'params', bad: [...objectBad, ['misshapen weights', { 'att_proj.weight': f([8, 8]), 'attn_out.weight': f([8, 8]) }]] }, { name: 'grads', bad: objectBad }],
  },
  {
    fn: 'CausalSelfAttention.forward', make: () => { const a = attn(); return { call: (xn, B, S, r) => a.forward(xn, B, S, r), args: [f([6, 8]), 2, 3, zeros([6, 8])] } },
    params: [{ name: 'xn', bad: tens() }, { name: 'B', bad: int(1) }, { name: 'S', bad: int(1) }, { name: 'residual', bad: tens(['a misshapen residual', zeros([5, 8])]) }],
  },
  {
    fn: 'CausalSelfAttention.backward', make: () => { const a = attn(); return { call: (s, d) => a.backward(s, d), args: [a.forward(f([6, 8]), 2, 3, zeros([6, 8])), f([6, 8], 2)] } },
    params: [{ name: 'saved', bad: objectBad }, { name: 'dres', bad: tens(['a misshapen dres', f([5, 8])]) }],
  },
  {
    fn: 'TransformerBlock', make: () => ({ call: (a, m, w, g, o) => new TransformerBlock(a, m, w, g, o), args: [attn(), new DenseFFN({ dModel: 8, hidden: 16 }), full([8], 1), undefined, {}] }),
    params: [{ name: 'attn', bad: objectBad }, { name: 'ffn', bad: [...objectBad, ['an FFN of another width', new DenseFFN({ dModel: 4, hidden: 8 })]] }, { name: 'normWeight', bad: tens(['a misshapen gain', full([4], 1)]) },
      { name: 'normGrad', bad: [['a number', 1], ['a string', 'x'], ['an object', {}]] }, opts({ recompute: oneOf('ffn') })],
  },
  {
    fn: 'TransformerBlock.forward', make: () => { const b = block(); return { call: (x, B, S, o) => b.forward(x, B, S, o), args: [f([6, 8]), 2, 3, { train: true }] } },
    params: [{ name: 'x', bad: tens() }, { name: 'B', bad: int(1) }, { name: 'S', bad: int(1) }, opts(FFN_FWD)],
  },
  {
    fn: 'TransformerBlock.backward', make: () => { const b = block(); return { call: (s, dy, o) => b.backward(s, dy, o), args: [b.forward(f([6, 8]), 2, 3, { train: true }).saved, f([6, 8], 2), {}] } },
    params: [{ name: 'saved', bad: objectBad }, { name: 'dy', bad: tens(['a misshapen dy', f([5, 8])]) }, opts({ auxGrad: num() })],
  },
  {
    fn: 'TransformerLM', make: () => ({ call: (o) => new TransformerLM(o), args: [{ ...lmOpts }] }),
    params: [{ name: 'options', bad: [...objectBad, ['undefined', undefined]], options: LM_OPTS }],
  },
  { fn: 'TransformerLM.config', make: () => ({ call: TransformerLM.config, args: ['tiny', {}] }), params: [{ name: 'name', bad: [['an unknown name', 'huge'], ['null', null], ['"constructor"', 'constructor']] }, opts(LM_OPTS, 'overrides')] },
  { fn: 'TransformerLM.decays', make: () => ({ call: TransformerLM.decays, args: ['transformer.ln_f.weight'] }), params: [{ name: 'name', bad: str }] },
  {
    fn: 'TransformerLM.forward', make: () => { const m = lm(); return { call: (x, o) => m.forward(x, o), args: [ids([1, 2, 3, 4], [2, 2]), {}] } },
    params: [{ name: 'tokens', bad: tens(['a float tensor', f([2, 2])], ['a 1-D tensor', ids([1, 2])]) }, opts({ train: bool, step: int(), noise: oneOf('none!'), lastOnly: bool, tau: num({ exclusiveMin: 0 }) })],
  },
  {
    fn: 'TransformerLM.loss', make: () => { const m = lm(); return { call: (o, y, i) => m.loss(o, y, i), args: [m.forward(ids([1, 2, 3, 4], [2, 2]), { train: true }), ids([2, 3, 4, 5], [2, 2]), -100] } },
    params: [{ name: 'out', bad: objectBad }, { name: 'targets', bad: tens(['a misshapen targets', ids([1, 2])]) }, { name: 'ignoreIndex', bad: int(-(2 ** 31), 2 ** 31 - 1) }],
  },
  {
    fn: 'TransformerLM.backward', make: () => {
      const m = lm()
      const out = m.forward(ids([1, 2, 3, 4], [2, 2]), { train: true })
      m.loss(out, ids([2, 3, 4, 5], [2, 2]))
      return { call: (o, d, op) => m.backward(o, d, op), args: [out, 1, {}] }
    },
    params: [{ name: 'out', bad: objectBad }, { name: 'dloss', bad: num() }, opts({ auxGrad: num() })],
  },
  {
    fn: 'TransformerLM.generate', make: () => { const m = lm(); return { call: (p, o) => m.generate(p, o), args: [[[1, 2]], { maxNewTokens: 2 }] } },
    params: [
      { name: 'prompts', bad: [...objectBad, ['[null]', [null]], ['[[null]]', [[null]]], ['[[1.5]]', [[1.5]]], ['[[NaN]]', [[NaN]]], ['[[-1]]', [[-1]]], ['[[2^53]]', [[2 ** 53]]], ['[[]]', [[]]], ['[[1], []]', [[1], []]], ['an id outside the vocabulary', [[1], [11]]]] },
      opts({
        maxNewTokens: [...int(), ['over maxSeqLen', 7]], temperature: num({ min: 0 }), topK: int(), topP: [...num({ exclusiveMin: 0 }), ['above 1', 1.5]],
        seed: [...int(0, 2 ** 32 - 1), ['a bigint', 1n]], stopToken: int(-(2 ** 31), 2 ** 31 - 1), stopTokens: STOP_TOKENS,
      }),
    ],
  },
  {
    fn: 'GenerationEngine', make: () => { const m = lm(); return { call: (mm, o) => new GenerationEngine(mm, o), args: [m, { maxBatch: 2 }] } },
    params: [
      { name: 'model', bad: [...objectBad, ['a VersatileFFN', new VersatileFFN(ffnOpts)]] },
      opts({ maxBatch: int(1, 65536), maxTokens: int(1, 2 ** 31 - 1), blockSize: int(1, 4096), prefillChunk: int(1, 1 << 20), idlePrefillChunk: int(1, 1 << 20), recordSteps: bool, overlapSteps: bool, prefault: bool }),
    ],
  },
  {
    // a request never throws: a bad one is a request that has already failed, so its result rejects
    fn: 'GenerationEngine.generate', make: () => { const e = new GenerationEngine(lm(), { maxBatch: 2 }); return { call: (p, o) => e.generate(p, o).result, args: [[1, 2], { maxNewTokens: 2 }] } },
    params: [
      { name: 'prompt', bad: [...objectBad.filter(([l]) => l !== 'an array'), ['[]', []], ['[null]', [null]], ['[1.5]', [1.5]], ['[NaN]', [NaN]], ['[-1]', [-1]], ['[2^53]', [2 ** 53]], ['an id outside the vocabulary', [1, 11]], ['a Float32Array', new Float32Array(2)]] },
      opts({
        maxNewTokens: [...int(), ['over maxSeqLen', 7]], temperature: num({ min: 0 }), topK: int(), topP: [...num({ exclusiveMin: 0 }), ['above 1', 1.5]],
        seed: [...int(0, 2 ** 32 - 1), ['a bigint', 1n]], stopTokens: STOP_TOKENS,
        signal: [['null', null], ['an object', {}], ['a string', 'x'], ['an AbortController', new AbortController()], ['a function', () => 1]],
      }),
    ],
  },
  { fn: 'GenerationEngine.close', make: () => { const e = new GenerationEngine(lm(), { maxBatch: 1 }); return { call: (o) => e.close(o), args: [{}] } }, params: [opts({ cancel: bool })] },
  {
    fn: 'TransformerLM.save', make: () => { const m = lm(); return { call: (p, o) => m.save(p, o), args: [ckpt, {}] } },
    params: [{ name: 'path', bad: [...str, ['a missing folder', join(dir, 'no-such-folder', 'x.safetensors')]] }, opts({ dtype: oneOf('bfloat'), metadata: [...objectBad.slice(1, 4), ['a number value', { a: 1 }]] })],
  },
  { fn: 'TransformerLM.load', make: () => { const m = lm(); return { call: (p, o) => m.load(p, o), args: [ckpt, {}] } }, params: [{ name: 'path', bad: [...str, ['a missing file', join(dir, 'no-such-file.safetensors')]] }, opts({ strict: bool })] },
  {
    fn: 'TransformerLM.fromFile', make: () => ({ call: (p, o) => TransformerLM.fromFile(p, o), args: [ckpt, {}] }),
    params: [{ name: 'path', bad: [...str, ['a missing file', join(dir, 'no-such-file.safetensors')]] }, opts({ device: oneOf('cpu:0'), dtype: oneOf('bfloat'), precision: oneOf('bf16') })],
  },
  {
    fn: 'TransformerLM.loadStateDict', make: () => { const m = lm(); return { call: (sd, o) => m.loadStateDict(sd, o), args: [m.stateDict(), {}] } },
    params: [{ name: 'stateDict', bad: [['null', null], ['a string', 'x'], ['a number', 1], ['an array', []]] }, opts({ strict: bool })],
  },
  {
    fn: 'AdamW', make: () => { const m = lm(); return { call: (p, g, o) => new AdamW(p, g, o), args: [m.parameters(), m.gradients(), {}] } },
    params: [
      { name: 'params', bad: [...objectBad.slice(0, 4), ['a plain object', {}], ['a Map of numbers', new Map([['a', 1]])]] }, { name: 'grads', bad: [...objectBad.slice(0, 4), ['a plain object', {}]] },
      opts({ lr: num({ min: 0 }), betas: [...objectBad.slice(0, 3), ['[1, 0.9]', [1, 0.9]], ['[NaN, 0.9]', [NaN, 0.9]], ['[0.9]', [0.9]]], eps: num({ exclusiveMin: 0 }), weightDecay: num({ min: 0 }), maxGradNorm: num({ min: 0 }), decays: [['a string', 'x'], ['null', null], ['a number', 1]] }),
    ],
  },
  { fn: 'AdamW.update', make: () => { const m = lm(); const o = new AdamW(m.parameters(), m.gradients()); return { call: (lr) => o.update(lr), args: [1e-3] } }, params: [{ name: 'lr', bad: num({ min: 0 }) }] },
  { fn: 'AdamW.decays', make: () => { const m = lm(); const o = new AdamW(m.parameters(), m.gradients()); return { call: (n) => o.decays(n), args: ['transformer.ln_f.weight'] } }, params: [{ name: 'name', bad: [...str, ['an unknown name', 'nope']] }] },
  {
    fn: 'cosineLR', make: () => ({ call: cosineLR, args: [5, { lr: 1e-3, warmupSteps: 2, totalSteps: 10 }] }),
    params: [{ name: 'step', bad: int() }, { name: 'schedule', bad: objectBad, options: { lr: num({ min: 0 }), warmupSteps: int(), totalSteps: int(), minRatio: [...num({ min: 0 }), ['2', 2]] } }],
  },
  {
    fn: 'trainStep', make: () => {
      const m = lm()
      const o = new AdamW(m.parameters(), m.gradients())
      return { call: (mm, oo, x, y, op) => trainStep(mm, oo, x, y, op), args: [m, o, ids([1, 2, 3, 4], [2, 2]), ids([2, 3, 4, 5], [2, 2]), {}] }
    },
    params: [
      { name: 'model', bad: objectBad }, { name: 'opt', bad: [...objectBad, ['another model\'s optimizer', (() => { const o = lm(); return new AdamW(o.parameters(), o.gradients()) })()]] },
      { name: 'tokens', bad: tens(['a float tensor', f([2, 2])]) }, { name: 'targets', bad: tens(['a misshapen targets', ids([1, 2])], ['a short Int32Array', new Int32Array(3)]) },
      opts({ schedule: [...objectBad, ['a schedule with lr -1', { lr: -1, warmupSteps: 0, totalSteps: 1 }]], noise: oneOf('gumbel '), ignoreIndex: int(-(2 ** 31), 2 ** 31 - 1), accumulate: [...int(1), ['a non-divisor of the batch', 3]], temperature: num({ exclusiveMin: 0 }) }),
    ],
  },
  {
    fn: 'AdamW.loadStateDict', make: () => { const m = lm(); const o = new AdamW(m.parameters(), m.gradients()); return { call: (st) => o.loadStateDict(st), args: [o.stateDict()] } },
    params: [{
      name: 'state', bad: objectBad, options: {
        step: int(), lr: num({ min: 0 }), eps: [...num({ exclusiveMin: 0 }), ['another eps', 1e-7]], weightDecay: [...num({ min: 0 }), ['another decay', 0.2]], maxGradNorm: [...num({ min: 0 }), ['another clip', 2]],
        betas: [...objectBad.slice(0, 3), ['[1, 0.9]', [1, 0.9]], ['other betas', [0.9, 0.999]]], decays: [['null', null], ['a string', 'x'], ['[1]', [1]], ['an unknown name', ['nope']]],
        m: [['null', null], ['a string', 'x'], ['an array', []], ['a Map', new Map()], ['no moments', {}]], v: [['null', null], ['a number', 1], ['no moments', {}]],
      },
    }],
  },
  {
    fn: 'TransformerLM.fromDense', make: () => { const d = new TransformerLM({ ...lmOpts, ffn: 'dense' }); return { call: (src, o) => TransformerLM.fromDense(src, o), args: [d, {}] } },
    params: [
      { name: 'source', bad: [['null', null], ['a number', 1], ['an object', {}], ['a versatile model', lm()]] },
      opts({
        ffn: oneOf('versatil'), experts: [...int(1), ['more than hidden', 17]], topK: [...int(1), ['more than experts', 9]], maxDepth: int(1), expertHidden: [...int(1), ['too wide', 3]],
        balanceLossWeight: num({ min: 0 }), seed: int(), maxSeqLen: int(1), device: dev, precision: oneOf('bf16'),
        vocabSize: [...int(1), ['another size', 12]], dModel: [...int(1), ['another size', 16]], nLayers: [...int(1), ['another size', 2]], nHeads: [...int(1), ['another size', 4]], hidden: [...int(1), ['another size', 32]],
      }),
    ],
  },
  {
    fn: 'saveCheckpoint', make: () => { const m = lm(); const o = new AdamW(m.parameters(), m.gradients()); return { call: (p, op) => saveCheckpoint(p, op), args: [trainCkpt, { model: m, optimizer: o }] } },
    params: [
      { name: 'path', bad: [...str, ['a missing folder', join(dir, 'no-such-folder', 'x.safetensors')]] },
      opts({
        model: [...objectBad, ['a Tensor', f([2])]], optimizer: [...objectBad, ['another model\'s optimizer', (() => { const o = lm(); return new AdamW(o.parameters(), o.gradients()) })()]],
        schedule: [...objectBad, ['a schedule with lr -1', { lr: -1, warmupSteps: 0, totalSteps: 1 }]], extra: [['NaN', NaN], ['Infinity', Infinity], ['a function', () => 1], ['a Map', new Map()], ['a bigint', 1n], ['a nested NaN', { a: [NaN] }]],
      }),
    ],
  },
  {
    fn: 'loadCheckpoint', make: () => { const m = lm(); const o = new AdamW(m.parameters(), m.gradients()); return { call: (p, op) => loadCheckpoint(p, op), args: [trainCkpt, { model: m, optimizer: o }] } },
    params: [
      { name: 'path', bad: [...str, ['a missing file', join(dir, 'no-such-file.safetensors')]] },
      opts({ model: [...objectBad, ['a dense model', new TransformerLM({ ...lmOpts, ffn: 'dense' })]], optimizer: [...objectBad, ['another model\'s optimizer', (() => { const o = lm(); return new AdamW(o.parameters(), o.gradients()) })()]] }),
    ],
  },
  {
    fn: 'saveSafetensors', make: () => ({ call: saveSafetensors, args: [ckpt, { a: f([2]) }, {}] }),
    params: [{ name: 'path', bad: [...str, ['a missing folder', join(dir, 'no-such-folder', 'x.safetensors')]] }, { name: 'tensors', bad: [['null', null], ['a string', 'x'], ['a number value', { a: 1 }]] }, opts({ dtype: oneOf('float'), metadata: [...objectBad.slice(1, 4), ['a number value', { a: 1 }]] })],
  },
  { fn: 'loadSafetensors', make: () => ({ call: loadSafetensors, args: [ckpt] }), params: [{ name: 'path', bad: [...str, ['a missing file', join(dir, 'no-such-file.safetensors')]] }] },
  {
    fn: 'parseSafetensors', make: () => ({ call: parseSafetensors, args: [new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0, 123, 125]), 'buf'] }),
    params: [{ name: 'buf', bad: [['null', null], ['a string', 'x'], ['a number', 1], ['an array', [1, 2]], ['an object', {}]] }, { name: 'source', bad: str }],
  },
  {
    fn: 'TokenDataset.open', make: () => ({ call: (p, o) => datasets.push(TokenDataset.open(p, o)), args: [tokFile, {}] }),
    params: [{ name: 'paths', bad: [...str, ['an empty array', []], ['[null]', [null]], ['a missing file', join(dir, 'no-such-file.bin')]] }, opts({ vocabSize: int(1, 2 ** 31) })],
  },
  { fn: 'TokenDataset.read', make: () => { const d = dataset(); return { call: (s, n) => d.read(s, n), args: [10, 5] } }, params: [{ name: 'start', bad: int(0, 200) }, { name: 'count', bad: int(0, 190) }] },
  { fn: 'TokenDataset.loader', make: () => { const d = dataset(); return { call: (o) => d.loader(o), args: [{ batchSize: 2, seqLen: 4 }] } }, params: [{ name: 'opts', bad: [...objectBad, ['undefined', undefined]], options: LOADER }] },
  { fn: 'TokenLoader', make: () => ({ call: (d, o) => new TokenLoader(d, o), args: [dataset(), { batchSize: 2, seqLen: 4 }] }), params: [{ name: 'dataset', bad: objectBad }, { name: 'opts', bad: [...objectBad, ['undefined', undefined]], options: LOADER }] },
  { fn: 'TokenLoader.starts', make: () => { const l = dataset().loader({ batchSize: 2, seqLen: 4 }); return { call: (e) => l.starts(e), args: [1] } }, params: [{ name: 'epoch', bad: int() }] },
  {
    fn: 'TokenLoader.restore', make: () => { const l = dataset().loader({ batchSize: 2, seqLen: 4 }); return { call: (p) => l.restore(p), args: [l.position()] } },
    params: [{ name: 'pos', bad: objectBad, options: { epoch: int(), index: int(), seed: int(0, 2 ** 32 - 1), order: oneOf('sequental'), seqLen: int(1), rank: int(), worldSize: int(1) } }],
  },
  { fn: 'GPT2Tokenizer.encode', make: () => { const k = new GPT2Tokenizer(); return { call: (s) => k.encode(s), args: ['hello'] } }, params: [{ name: 'text', bad: str }] },
  {
    fn: 'GPT2Tokenizer.decode', make: () => { const k = new GPT2Tokenizer(); return { call: (x) => k.decode(x), args: [[31373]] } },
    params: [{ name: 'ids', bad: [...objectBad.filter(([l]) => l !== 'an array'), ['[50257]', [50257]], ['[-1]', [-1]], ['[1.5]', [1.5]], ['[NaN]', [NaN]], ['a Float32Array', new Float32Array(1)]] }],
  },
  {
    fn: 'evaluate', make: () => ({ call: (m, d, o) => evaluate(m, d, o), args: [lm(), dataset(), { batchSize: 2, seqLen: 4, batches: 1 }] }),
    params: [{ name: 'model', bad: objectBad }, { name: 'dataset', bad: objectBad }, { name: 'opts', bad: [...objectBad, ['undefined', undefined]], options: { batchSize: int(1, 1 << 20), seqLen: int(1, 1 << 24), batches: int(1) } }],
  },
]

// exports that take no arguments to get wrong, or are not entry points
const NO_ARGUMENTS = new Set([
  'getNumThreads', 'VffnError', // an error class: any code and message
  'Tensor', // constructed only by the library (tensor(), empty(), ...)
  'Tensor.data', 'Tensor.clone', 'Tensor.contiguous', 'Tensor.dispose', 'Tensor.toString', 'Device.sync', 'Device.memory', 'Device.resetPeakMemory', 'Device.toString',
  'DenseFFN.parameters', 'DenseFFN.namedParameters', 'DenseFFN.zeroGrad', 'DenseFFN.stateDict', 'DenseFFN.dispose',
  'VersatileFFN.parameters', 'VersatileFFN.namedParameters', 'VersatileFFN.zeroGrad', 'VersatileFFN.stateDict', 'VersatileFFN.dispose', 'VersatileFFN.loadStateDict',
  'MoEFFN.expertStateDict',
  'TransformerLM.parameters', 'TransformerLM.gradients', 'TransformerLM.numParameters', 'TransformerLM.zeroGrad', 'TransformerLM.stateDict', 'TransformerLM.dispose',
  'AdamW.dispose', 'AdamW.stateDict', 'Device', 'GenerationEngine.stats',
  'GenerationRequest', // constructed only by GenerationEngine.generate
  'TokenDataset', 'TokenDataset.scan', 'TokenDataset.close', // TokenDataset: constructed by TokenDataset.open
  'TokenLoader.next', 'TokenLoader.nextArrays', 'TokenLoader.position', 'GPT2Tokenizer', 'GPT2Tokenizer.available',
  'TokenDataset.readInto', 'TokenDataset.live', 'TokenDataset.fileAt', 'TokenLoader.windowAt',
  // private helpers (TypeScript keeps them on the prototype)
  'VersatileFFN.args', 'MoEFFN.args', 'TransformerLM.addOwn', 'TransformerLM.grad', 'TransformerLM.checkBackward', 'TransformerLM.loadTensors', 'TransformerLM.needFloat32', 'TransformerLM.checkTokens', 'CausalSelfAttention.project', 'TransformerBlock.run',
  'GenerationEngine.abort', 'GenerationEngine.kick', 'GenerationEngine.release', 'GenerationEngine.admit', 'GenerationEngine.loop', 'GenerationEngine.step', 'GenerationEngine.graph', 'GenerationEngine.tryGraph', 'GenerationEngine.dropGraphs', 'GenerationEngine.params', 'GenerationEngine.canFollow', 'GenerationEngine.finishDecode', 'GenerationEngine.failStep', 'GenerationEngine.deliver', 'GenerationRequest.notify',
])

t.test('every exported function, class and method has a row', async (t) => {
  const covered = new Set(ROWS.map((r) => r.fn))
  const missing: string[] = []
  for (const [name, v] of Object.entries(lib)) {
    if (typeof v !== 'function' || name.startsWith('_')) continue
    if (!covered.has(name) && !NO_ARGUMENTS.has(name)) missing.push(name)
    const methods = [
      ...Object.getOwnPropertyNames(v.prototype ?? {}).filter((m) => m !== 'constructor' && typeof Object.getOwnPropertyDescriptor(v.prototype, m)?.value === 'function'),
      ...Object.getOwnPropertyNames(v).filter((m) => typeof (v as unknown as Record<string, unknown>)[m] === 'function'),
    ]
    for (const m of methods) if (!m.startsWith('_') && !covered.has(`${name}.${m}`) && !NO_ARGUMENTS.has(`${name}.${m}`)) missing.push(`${name}.${m}`)
  }
  t.same(missing, [], 'exports without a row in the sweep')
  t.ok(ROWS.length > 50, 'the table is not empty')
})

// the codes that say the caller passed something wrong (never ERR_INTERNAL, ERR_OOM, ERR_CUDA, ...)
const USER_CODES: string[] = ['ERR_ARGUMENT', 'ERR_SHAPE', 'ERR_DTYPE', 'ERR_DEVICE', 'ERR_DISPOSED']
const live = () => device('cpu').memory().live
const NAMED = (msg: string, name: string) => new RegExp(`(^|[^\\w])${name.replace(/[.[\]]/g, '\\$&')}([:.\\[ ]|$)`).test(msg)
const misspell = (k: string) => (k.toLowerCase() !== k ? k.toLowerCase() : k.length > 3 ? k.slice(0, -2) + k.slice(-1) + k.slice(-2, -1) : k + 'x')

async function attempt(fn: () => unknown): Promise<{ err?: unknown; sync: boolean }> {
  let r: unknown
  try {
    r = fn()
  } catch (e) {
    return { err: e, sync: true }
  }
  if (r instanceof Promise) {
    try {
      await r
    } catch (e) {
      return { err: e, sync: false }
    }
  }
  return { sync: false }
}

t.test('every bad argument and option fails with a VffnError naming it', async (t) => {
  const start = Date.now()
  let cases = 0
  // the tokenizer's valid calls need the optional gpt-tokenizer package; without it they are skipped, not passed
  const tokenizer = GPT2Tokenizer.available()
  if (!tokenizer) t.skip('GPT2Tokenizer rows: gpt-tokenizer is not installed')
  for (const row of ROWS.filter((r) => tokenizer || !r.fn.startsWith('GPT2Tokenizer'))) {
    const problems: string[] = []
    const ok = await attempt(() => { const { call, args } = row.make(); return (call as (...a: unknown[]) => unknown)(...args) })
    if (ok.err) problems.push(`the valid call fails: ${String(ok.err)}`)
    const run = async (i: number, what: string, value: (args: unknown[]) => unknown, name: string, suggests?: string) => {
      cases++
      const { call, args } = row.make()
      const a = [...args]
      while (a.length <= i) a.push(undefined)
      a[i] = value(args)
      const before = live()
      const { err, sync } = await attempt(() => (call as (...x: unknown[]) => unknown)(...a))
      const grew = live() - before
      if (!(err instanceof VffnError)) problems.push(`${name} = ${what}: ${err === undefined ? 'accepted' : `threw ${(err as Error)?.name}: ${(err as Error)?.message}`}`)
      else if (!USER_CODES.includes(err.code)) problems.push(`${name} = ${what}: code ${String(err.code)}, not one of a caller's mistakes`)
      else if (suggests && err.code !== 'ERR_ARGUMENT') problems.push(`${name} = ${what}: an unknown key gave ${err.code}, not ERR_ARGUMENT`)
      else if (!NAMED(err.message, name)) problems.push(`${name} = ${what}: the message does not name it: ${err.message}`)
      else if (suggests && !err.message.includes(`did you mean '${suggests}'`)) problems.push(`${name} = ${what}: does not suggest '${suggests}': ${err.message}`)
      else if (grew > 0) problems.push(`${name} = ${what}: ${grew} bytes allocated before failing`)
      if (sync && /generate|save|load\b|loadSafetensors|saveSafetensors/.test(row.fn) && !/parse/.test(row.fn)) problems.push(`${name} = ${what}: threw instead of rejecting`)
    }
    for (const [i, p] of row.params.entries()) {
      for (const [what, v] of p.bad ?? []) await run(i, what, () => v, p.name)
      if ('options' in p)
        for (const [key, bad] of Object.entries(p.options)) {
          for (const [what, v] of bad) await run(i, what, (args) => ({ ...(args[i] as object), [key]: v }), key)
          const wrong = misspell(key)
          await run(i, `a misspelled key '${wrong}'`, (args) => ({ ...(args[i] as object), [wrong]: (args[i] as Record<string, unknown>)?.[key] ?? 1 }), `${p.name}.${wrong}`, key)
        }
    }
    t.same(problems, [], `${row.fn}(${row.params.map((p) => p.name).join(', ')})`)
  }
  t.ok(cases > 1500, `${cases} bad calls in ${Date.now() - start} ms`)
})

t.test('the edges of each rule: the last valid value works, the first invalid one fails, nothing changes', async (t) => {
  // int32 holds [-2^31, 2^31 - 1] exactly; one past either end no longer wraps
  t.same(Array.from(await tensor([2 ** 31 - 1, -(2 ** 31)], undefined, { dtype: 'int32' }).intData()), [2 ** 31 - 1, -(2 ** 31)])
  t.throws(() => tensor([3e9], undefined, { dtype: 'int32' }), { code: 'ERR_ARGUMENT', message: /data: int32 tensors need integers in \[-2147483648, 2147483647\], got 3000000000/ })
  const iz = full([2], 7, { dtype: 'int32' })
  for (const v of [1e10, Infinity, 1.5]) t.throws(() => iz.fill_(v), { code: 'ERR_ARGUMENT', message: /^value: expected an integer in \[-2147483648, 2147483647\]/ })
  t.same(Array.from(await iz.intData()), [7, 7], 'a refused fill_ leaves the values')
  // unknown keys name the nearest known one
  t.throws(() => new TransformerLM({ ...lmOpts, maxSeqlen: 4 } as never), { code: 'ERR_ARGUMENT', message: /options\.maxSeqlen: unknown option "maxSeqlen"; did you mean 'maxSeqLen'\?/ })
  t.throws(() => new VersatileFFN({ ...ffnOpts, maxdepth: 2 } as never), { code: 'ERR_ARGUMENT', message: /did you mean 'maxDepth'\?/ })
  const m = lm()
  await t.rejects(m.generate([[1]], { topk: 2 } as never), { code: 'ERR_ARGUMENT', message: /opts\.topk: .*did you mean 'topK'\?/ })
  t.throws(() => m.forward(ids([1, 2], [1, 2]), { train: 'yes' } as never), { code: 'ERR_ARGUMENT', message: /opts\.train: expected a boolean, got "yes"/ })
  // theta, temperature schedule, optimizer hyperparameters
  t.throws(() => rope(f([1, 2, 8]), 2, 0, { theta: 0 }), { code: 'ERR_ARGUMENT', message: /theta: expected a finite number > 0, got 0/ })
  t.throws(() => gumbelTemperature(NaN), { code: 'ERR_ARGUMENT', message: /^step: / })
  t.equal(gumbelTemperature(0), 5)
  t.throws(() => new AdamW(m.parameters(), m.gradients(), { lr: -1 }), { code: 'ERR_ARGUMENT', message: /lr: expected a finite number >= 0, got -1/ })
  t.throws(() => new AdamW(m.parameters(), m.gradients(), { eps: 0 }), { code: 'ERR_ARGUMENT', message: /eps: expected a finite number > 0, got 0/ })
  // truncation: below 0.1σ the 1000 redraws could run out; at 0.1σ every value is inside
  t.throws(() => randn([4], { truncate: 1e-6 }), { code: 'ERR_ARGUMENT', message: /truncate: expected 0 \(none\) or >= 0.1/ })
  const r = await randn([20000], { truncate: 0.1, seed: 5 }).data()
  t.ok(r.every((v) => Math.abs(v) <= 0.1), `every value within 0.1σ (max ${Math.max(...r.map(Math.abs))})`)
  // the sampler's state is 32 bits: the largest seed works, the next one is refused rather than wrapped to 0
  const a = await m.generate([[1, 2]], { maxNewTokens: 4, temperature: 1, seed: 2 ** 32 - 1 })
  t.equal(a[0].length, 4)
  await t.rejects(m.generate([[1, 2]], { seed: 2 ** 32 }), { code: 'ERR_ARGUMENT', message: /seed: expected an integer in \[0, 4294967295\], got 4294967296/ })
  // element counts past 2^50 name the shape
  t.throws(() => empty([2 ** 27, 2 ** 26]), { code: 'ERR_SHAPE', message: /^shape: \[134217728, 67108864\] holds 9007199254740992 elements, too many/ })
  // another model's optimizer: refused before any work, parameters untouched
  const other = lm()
  const opt = new AdamW(other.parameters(), other.gradients())
  const before = await m.parameters().get('transformer.wte.weight')!.data()
  t.throws(() => trainStep(m, opt, ids([1, 2], [1, 2]), ids([2, 3], [1, 2])), { code: 'ERR_ARGUMENT', message: /opt: this optimizer updates another model's parameters/ })
  t.same(await m.parameters().get('transformer.wte.weight')!.data(), before)
  t.equal(opt.step, 0, 'the optimizer did not step')
  // saving into a missing folder is a VffnError naming the path
  await t.rejects(m.save(join(dir, 'no-such-folder', 'm.safetensors')), { code: 'ERR_ARGUMENT', message: /^path: cannot write .*no-such-folder/ })
  // null where an object belongs
  t.throws(() => empty([2], null as never), { code: 'ERR_ARGUMENT', message: /^opts: expected an options object, got null/ })
  t.throws(() => m.loadStateDict(null as never), { code: 'ERR_ARGUMENT', message: /^stateDict: / })
  t.throws(() => parseSafetensors(null as never), { code: 'ERR_ARGUMENT', message: /^buf: / })
})
