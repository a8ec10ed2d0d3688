// Continued pretraining from a dense model: a VersatileFFN model that takes every weight the two
// share (embedding, attention, norms, ff_proj/ff_out, head) from a dense checkpoint or model, with
// the router and the loop head initialised as SPEC.md says (normal 0.02, truncated at 3σ).
import { Device, DeviceLike } from '../device'
import { fail, show } from '../errors'
import { StoredTensor, loadSafetensors } from '../io/safetensors'
import { Tensor } from '../tensor'
import { CONFIG_KEY, parseConfig } from './model_config'
import { checkNames } from './state'
import { PRECISION, Precision } from './precision'
import type { TransformerLM, TransformerLMOptions } from './model'
import { checkOptions, device as deviceCheck, int, number, oneOf, optional } from '../validate'

/** Options of TransformerLM.fromDense. */
export interface FromDenseOptions {
  /** the FFN of the new model: 'versatile' (the only one; the default) */
  ffn?: 'versatile'
  /** virtual experts N; default 8 */
  experts?: number
  /** experts per token K; default 2 */
  topK?: number
  /** maximum loops L; default 4 */
  maxDepth?: number
  /** expert width E; default hidden/experts */
  expertHidden?: number
  /** α of the balance loss; default 1e-5 */
  balanceLossWeight?: number
  /** seed of the router and loop-head init and of the Gumbel noise; default the dense model's */
  seed?: number
  /** longest sequence; default the dense model's (rotary positions have no weights, so any length loads) */
  maxSeqLen?: number
  /** where the new model lives; default the dense model's device ('cpu' for a file) */
  device?: DeviceLike
  /** training precision of the new model ('float32', the default, or 'bf16-mixed') */
  precision?: Precision
  /** when given, each must equal the dense model's size (a guard against loading the wrong file) */
  vocabSize?: number
  dModel?: number
  nLayers?: number
  nHeads?: number
  hidden?: number
}

const SIZES = ['vocabSize', 'dModel', 'nLayers', 'nHeads', 'hidden'] as const
const FROM_DENSE_OPTIONS = {
  ffn: optional(oneOf(['versatile'] as const)), experts: optional(int(1)), topK: optional(int(1)), maxDepth: optional(int(1)),
  expertHidden: optional(int(1)), balanceLossWeight: optional(number({ min: 0 })), seed: optional(int(0)), maxSeqLen: optional(int(1)),
  device: optional(deviceCheck), precision: optional(PRECISION), vocabSize: optional(int(1)), dModel: optional(int(1)), nLayers: optional(int(1)), nHeads: optional(int(1)), hidden: optional(int(1)),
}
// the weights a VersatileFFN model has and a dense one lacks
const NEW = /\.(expert_gate|depth_predictor)\.weight$/

// every tensor of a dense model with these sizes, by name
function denseShapes(c: TransformerLMOptions): [string, number[]][] {
  const { vocabSize: V, dModel: D, hidden: I } = c
  const out: [string, number[]][] = [['transformer.wte.weight', [V, D]]]
  for (let i = 0; i < c.nLayers; i++) {
    const p = `transformer.blocks.${i}.`
    out.push([p + 'attn_norm.weight', [D]], [p + 'att_proj.weight', [3 * D, D]], [p + 'attn_out.weight', [D, D]],
      [p + 'ff_norm.weight', [D]], [p + 'ff_proj.weight', [2 * I, D]], [p + 'ff_out.weight', [D, I]])
  }
  out.push(['transformer.ln_f.weight', [D]], ['transformer.ff_out.weight', [V, D]])
  return out
}

/**
 * @internal TransformerLM.fromDense (see its TSDoc). `Model` is the TransformerLM class, passed
 * in so this file needs no runtime import of model.ts.
 */
export async function fromDense(Model: typeof TransformerLM, source: string | TransformerLM, opts: FromDenseOptions = {}): Promise<TransformerLM> {
  const o = checkOptions('opts', opts, FROM_DENSE_OPTIONS)
  let cfg: TransformerLMOptions
  let label: string
  let weights: Map<string, Tensor | StoredTensor>
  if (typeof source === 'string') {
    label = show(source)
    const file = await loadSafetensors(source)
    cfg = parseConfig(file.metadata[CONFIG_KEY], label)
    weights = file.tensors
  } else if (source instanceof Model) {
    label = 'source'
    cfg = source.config
    weights = source.parameters()
    for (const [n, p] of weights) (p as Tensor)._check(`source: ${n}`)
  } else fail('ERR_ARGUMENT', `source: expected a dense checkpoint's path or a dense TransformerLM, got ${show(source)}`)
  if (cfg.ffn !== 'dense')
    fail('ERR_ARGUMENT', `${label}: not a dense model (its ffn is ${show(cfg.ffn ?? 'versatile')}); fromDense starts from a model with ffn: 'dense'`)
  const differ = SIZES.filter((k) => o[k] !== undefined && o[k] !== cfg[k])
  if (differ.length) fail('ERR_SHAPE', `${label}: the dense model's sizes differ from those asked: ${differ.map((k) => `${k} ${cfg[k]}, expected ${o[k]}`).join('; ')}`)
  // the dense tensors, by name and shape, are checked before anything is allocated
  const want = denseShapes(cfg)
  checkNames(label, want, [...weights.keys()], true, 'tensor')
  for (const [n, shape] of want) {
    const got = weights.get(n)!.shape
    if (got.join() !== shape.join()) fail('ERR_SHAPE', `${label}: tensor ${show(n)} has shape ${show(got)}, its config needs ${show(shape)}`)
  }
  const dev = Device.get(o.device ?? (source instanceof Model ? source.device : 'cpu'))
  const vcfg: TransformerLMOptions = {
    vocabSize: cfg.vocabSize, dModel: cfg.dModel, nLayers: cfg.nLayers, nHeads: cfg.nHeads, hidden: cfg.hidden,
    maxSeqLen: o.maxSeqLen ?? cfg.maxSeqLen, ffn: 'versatile', experts: o.experts, topK: o.topK, maxDepth: o.maxDepth,
    expertHidden: o.expertHidden, balanceLossWeight: o.balanceLossWeight, seed: o.seed ?? cfg.seed, device: dev, dtype: 'float32',
    precision: o.precision,
  }
  // SPEC's init for everything; the shared weights are then overwritten, the router and loop head kept
  const m = new Model(vcfg)
  const staged: Tensor[] = []
  try {
    const sd: Record<string, Tensor | Float32Array> = {}
    for (const [n, p] of m.parameters()) {
      if (NEW.test(n)) {
        sd[n] = p
        continue
      }
      const w = weights.get(n)!
      if (!(w instanceof Tensor)) sd[n] = w.data
      else if (w.device.type === dev.type && w.device.index === dev.index) sd[n] = w
      else {
        const c = w.to(dev)
        staged.push(c)
        sd[n] = c
      }
    }
    m.loadStateDict(sd)
  } catch (e) {
    m.dispose() // the caller gets no model to dispose
    throw e
  } finally {
    for (const t of staged) t.dispose()
  }
  return m
}
