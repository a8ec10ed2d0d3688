// TransformerLM: token embedding, blocks of attention + DenseFFN or VersatileFFN, final RMSNorm
// and an untied output head, with docs/SPEC.md's parameter names (OLMo's), so checkpoints interoperate.
import { Device, DeviceLike } from '../device'
import { VffnError, fail, show } from '../errors'
import { StoredTensor, loadSafetensors, saveSafetensors } from '../io/safetensors'
import { crossEntropy, crossEntropyBackward, embedding, embeddingBackward, zero_ } from '../lm_ops'
import { checkTensor, matmul, reshapeFree } from '../ops'
import { Tensor, full, randn, zeros } from '../tensor'
import { CausalSelfAttention, checkHeads } from './attention'
import { BlockReplay, BlockSaved, FFNModule, TransformerBlock, blockSavedTensors, releaseBlockSaved, rmsnorm, rmsnormBackward } from './block'
import { FFNKind, checkFFNSizes, createFFN, resolvedFFN } from './model_ffn'
import { FromDenseOptions, fromDense } from './from_dense'
import { generate, GenerateOptions } from './generate'
import { CONFIG_KEY, configJSON, parseConfig } from './model_config'
import { LoadOptions, LoadResult, checkNames, loadInto, strictOf } from './state'
import { PRECISION, Precision, computeCopyOf, disposeComputeCopy, makeComputeCopy, refreshComputeCopies } from './precision'
import { checkPrecision } from './module'
import type { VersatileStats } from './versatile'
import type { MoEStats } from './moe'
import { arg, bool, checkOptions, device as deviceCheck, dtype as dtypeCheck, int, number, object, oneOf, optional, string, stringRecord, INT32 } from '../validate'

/** The model's shape and options (see TransformerLM.config for the named shapes). */
export interface TransformerLMOptions {
  vocabSize: number
  dModel: number
  nLayers: number
  nHeads: number
  /** SwiGLU intermediate size I */
  hidden: number
  maxSeqLen?: number
  /**
   * each block's FFN: 'versatile' (default), 'dense', 'moe' (MoEFFN: experts, topK, expertHidden
   * default floor(hidden/topK), equal active parameters to the dense FFN) or 'loops' (LoopFFN: the
   * dense FFN applied `loops` times)
   */
  ffn?: FFNKind
  /** applications of the FFN per block when ffn is 'loops' (default 4) */
  loops?: number
  experts?: number
  topK?: number
  maxDepth?: number
  expertHidden?: number
  /**
   * α of each VersatileFFN or MoE layer's load-balancing loss, part of trainStep's objective; default
   * 1e-5 (the paper's text; the authors' released config uses 5e-5), 0 disables it
   */
  balanceLossWeight?: number
  device?: DeviceLike
  /** parameter dtype: 'float32' (default, trains) or 'bfloat16' (inference only; activations float32) */
  dtype?: 'float32' | 'bfloat16'
  /**
   * 'float32' (default) or 'bf16-mixed': parameters, gradients and AdamW moments stay float32 (the
   * master copy, what checkpoints hold); embedding, attention, FFN and head matrices are read
   * through bfloat16 copies that every optimizer update refreshes. Not recorded in checkpoints
   * (a training choice, like the device). Needs dtype 'float32'.
   */
  precision?: Precision
  seed?: number
  /**
   * Activation recompute in training (not part of a checkpoint's config): 'none' (default) keeps
   * every activation backward reads; 'ffn' keeps only each FFN loop's input (and the width path's)
   * and recomputes the SwiGLU pre-activations in backward (CPU only for now); 'block' keeps only
   * each block's input and runs the block's forward again in backward. Gradients are the same,
   * bit for bit, in all three.
   */
  recompute?: 'none' | 'ffn' | 'block'
}

/** The paper's three sizes (15 layers, 16 heads, N=8, K=2, L=4, 50304 embedding rows) and small ones. */
export const CONFIGS = {
  '354M': { vocabSize: 50304, dModel: 1024, hidden: 4096, nLayers: 15, nHeads: 16, maxSeqLen: 2048 },
  '720M': { vocabSize: 50304, dModel: 1536, hidden: 6144, nLayers: 15, nHeads: 16, maxSeqLen: 2048 },
  '1.21B': { vocabSize: 50304, dModel: 2048, hidden: 8192, nLayers: 15, nHeads: 16, maxSeqLen: 2048 },
  small: { vocabSize: 4096, dModel: 256, hidden: 1024, nLayers: 4, nHeads: 8, maxSeqLen: 512 },
  tiny: { vocabSize: 256, dModel: 64, hidden: 256, nLayers: 2, nHeads: 4, maxSeqLen: 128 },
} as const

/** Options of TransformerLM.fromFile. */
export interface FromFileOptions {
  /** where the model lives; default 'cpu' */
  device?: DeviceLike
  /** parameter dtype; default the one the checkpoint's config records */
  dtype?: 'float32' | 'bfloat16'
  /** training precision of the rebuilt model; default 'float32' */
  precision?: Precision
}

/** Options of TransformerLM.forward. */
export interface ForwardOptions {
  train?: boolean
  /** training step (drives the Gumbel temperature schedule) */
  step?: number
  noise?: 'gumbel' | 'none'
  /** training only: the Gumbel temperature of every VersatileFFN layer; default gumbelTemperature(step) */
  tau?: number
  /** inference only: logits of the last position of each sequence ([B, 1, V]), sparing the head's work on the rest */
  lastOnly?: boolean
  /** @internal the micro-batch of an accumulated step: each draws its own Gumbel noise (0: the step's own) */
  noiseStream?: number
}

/** What TransformerLM.forward returns; dispose() it when done (backward consumes a training output's saved values). */
export interface LMOutput {
  /** [B, S, vocabSize] */
  logits: Tensor<'float32'>
  /**
   * Per-layer FFN statistics: VersatileStats (routing, loop counts, λ) for a VersatileFFN layer,
   * MoEStats (routing) for a mixture-of-experts layer, undefined for a dense or k-loop one.
   * dispose() (or the output's dispose()) frees them.
   */
  stats: (VersatileStats | MoEStats | undefined)[]
  /** Per-layer balance losses ([1] float32) in training with VersatileFFN or MoE layers; undefined otherwise. */
  auxLoss: (Tensor | undefined)[]
  /** @internal what backward needs */
  _saved?: Saved
  /**
   * Frees everything this output holds: logits, stats tensors, balance losses and, for a training
   * output that backward has not consumed (one only evaluated with loss), the saved activations.
   */
  dispose(): void
}

interface Saved { B: number; S: number; tokens: Tensor; blocks: (BlockSaved | BlockReplay)[]; xf: Tensor; xfn: Tensor; rstd: Tensor; lse?: Tensor; targets?: Tensor; ignoreIndex?: number }

// what backward would have freed, for a training output dropped without it
function releaseSaved(s: Saved): void {
  for (const t of [s.tokens, s.xf, s.xfn, s.rstd, s.lse, s.targets]) t?.dispose()
  for (const b of s.blocks) {
    releaseBlockSaved(b)
    b.x.dispose()
  }
}

function lmOutput(logits: Tensor, stats: LMOutput['stats'], auxLoss: LMOutput['auxLoss'], saved?: Saved): LMOutput {
  const out: LMOutput = {
    logits: logits as Tensor<'float32'>, stats, auxLoss, _saved: saved,
    dispose() {
      logits.dispose()
      for (const s of stats) s?.dispose()
      for (const a of auxLoss) a?.dispose()
      if (out._saved) releaseSaved(out._saved)
      out._saved = undefined
    },
  }
  return out
}

const NORM_NAMES = /(^|\.)(attn_norm|ff_norm|ln_f)\.weight$/

// splitmix64 over (seed, a, b): distinct 53-bit seeds for each layer and step
export function deriveSeed(seed: number | bigint, a: number, b = 0): bigint {
  let z = (BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(a) * 0xbf58476d1ce4e5b9n + BigInt(b) * 0x94d049bb133111ebn) & ((1n << 64n) - 1n)
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & ((1n << 64n) - 1n)
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & ((1n << 64n) - 1n)
  return (z ^ (z >> 31n)) & ((1n << 53n) - 1n)
}

const LM_OPTIONS = {
  vocabSize: int(1), dModel: int(2), nLayers: int(1), nHeads: int(1), hidden: int(1), maxSeqLen: optional(int(1)),
  ffn: optional(oneOf(['versatile', 'dense', 'moe', 'loops'] as const)), loops: optional(int(1)), experts: optional(int(1)), topK: optional(int(1)), maxDepth: optional(int(1)),
  expertHidden: optional(int(1)), balanceLossWeight: optional(number({ min: 0 })), device: optional(deviceCheck),
  dtype: optional(dtypeCheck(['float32', 'bfloat16'] as const)), precision: optional(PRECISION), seed: optional(int(0)),
  recompute: optional(oneOf(['none', 'ffn', 'block'] as const)),
}
const LM_REQUIRED = ['vocabSize', 'dModel', 'nLayers', 'nHeads', 'hidden'] as const
const LM_FORWARD_OPTIONS = { train: optional(bool), step: optional(int(0)), noise: optional(oneOf(['gumbel', 'none'] as const)), lastOnly: optional(bool), noiseStream: optional(int(0)), tau: optional(number({ exclusiveMin: 0 })) }
const SAVE_OPTIONS = { dtype: optional(dtypeCheck(['float32', 'bfloat16'] as const)), metadata: optional(stringRecord) }

/**
 * An OLMo-style pre-norm decoder (docs/SPEC.md): embedding, blocks of rotary causal attention and a
 * DenseFFN, VersatileFFN, MoEFFN or LoopFFN, a final norm and an untied head. Training: forward, loss, backward, or
 * trainStep; inference: forward and generate; checkpoints: save, load, fromFile.
 */
export class TransformerLM {
  // precision and recompute are how the model trains, like its device: not part of the config a checkpoint records
  readonly config: Required<Omit<TransformerLMOptions, 'device' | 'precision' | 'expertHidden' | 'balanceLossWeight' | 'loops' | 'recompute'>> & { expertHidden?: number; balanceLossWeight?: number; loops?: number }
  /** Training precision ('float32' or 'bf16-mixed'). */
  readonly precision: Precision
  /** What a training forward keeps for backward (see TransformerLMOptions.recompute) */
  readonly recompute: 'none' | 'ffn' | 'block'
  readonly device: Device
  readonly blocks: TransformerBlock[]
  // the model's own parameters (all but the FFNs'); gradients appear on first use (see grad);
  // `weight` is what forward and backward read: the bfloat16 copy under bf16-mixed, else param
  private readonly own = new Map<string, { param: Tensor; weight: Tensor; grad?: Tensor }>()

  constructor(opts: TransformerLMOptions) {
    if (opts === undefined) fail('ERR_ARGUMENT', 'options: expected an options object, got undefined')
    const o = checkOptions('options', opts, LM_OPTIONS, LM_REQUIRED)
    checkHeads(o.dModel!, o.nHeads!)
    checkFFNSizes(o.ffn ?? 'versatile', o.hidden!, o)
    const vocabSize = o.vocabSize!, dModel = o.dModel!, nLayers = o.nLayers!, nHeads = o.nHeads!, hidden = o.hidden!
    const maxSeqLen = o.maxSeqLen ?? 2048, ffn = o.ffn ?? 'versatile', dtype = o.dtype ?? 'float32', seed = o.seed ?? 0
    const precision = checkPrecision(o.precision, dtype)
    this.precision = precision
    this.config = {
      vocabSize, dModel, nLayers, nHeads, hidden, maxSeqLen, ffn, seed, dtype,
      experts: o.experts ?? 8, topK: o.topK ?? 2, maxDepth: o.maxDepth ?? 4,
      expertHidden: o.expertHidden, balanceLossWeight: o.balanceLossWeight, loops: o.loops,
    }
    this.recompute = o.recompute ?? 'none'
    this.device = o.device ?? Device.get('cpu')
    const dev = this.device
    this.blocks = []
    try {
      let k = 0
      // docs/SPEC.md init: normal(0, 0.02) truncated at 3 sigma for matrices, norm gains at 1
      const mat = (name: string, shape: number[]) => this.addOwn(name, randn(shape, { std: 0.02, truncate: 3, seed: deriveSeed(seed, 1, k++), device: dev, dtype }), true)
      const gain = (name: string) => this.addOwn(name, full([dModel], 1, { device: dev, dtype }), false)
      const grad = (name: string) => this.grad(name)
      mat('transformer.wte.weight', [vocabSize, dModel])
      for (let i = 0; i < nLayers; i++) {
        const p = `transformer.blocks.${i}.`
        const attnParams = { 'att_proj.weight': mat(p + 'att_proj.weight', [3 * dModel, dModel]), 'attn_out.weight': mat(p + 'attn_out.weight', [dModel, dModel]) }
        // a function, so the attention reaches (and allocates) the gradients only when backward runs
        const attnGrads = () => ({ 'att_proj.weight': grad(p + 'att_proj.weight'), 'attn_out.weight': grad(p + 'attn_out.weight') })
        const attn = new CausalSelfAttention(dModel, nHeads, attnParams, attnGrads)
        const norm = gain(p + 'attn_norm.weight')
        const f: FFNModule = createFFN(ffn, {
          dModel, hidden, experts: this.config.experts, topK: this.config.topK, maxDepth: this.config.maxDepth,
          expertHidden: opts.expertHidden, balanceLossWeight: opts.balanceLossWeight, loops: opts.loops, device: dev, dtype, precision, seed: Number(deriveSeed(seed, 2, i)),
          recompute: this.recompute === 'ffn' ? 'ffn' : 'none',
        })
        this.blocks.push(new TransformerBlock(attn, f, norm, () => grad(p + 'attn_norm.weight'), { recompute: this.recompute === 'block' ? 'block' : 'none' }))
      }
      gain('transformer.ln_f.weight')
      mat('transformer.ff_out.weight', [vocabSize, dModel])
    } catch (e) {
      // the caller gets no model to dispose: free what was built before the failure
      this.dispose()
      throw e
    }
    // the config records what the FFNs resolved, so a checkpoint's copy rebuilds the same model
    Object.assign(this.config, resolvedFFN(this.blocks[0].ffn))
  }

  // returns what forward reads: a matrix's bfloat16 copy under bf16-mixed (norm gains stay float32)
  private addOwn(name: string, t: Tensor, matrix: boolean): Tensor {
    // registered before the copy is made, so a failed allocation leaves nothing dispose() misses
    const e: { param: Tensor; weight: Tensor } = { param: t, weight: t }
    this.own.set(name, e)
    if (matrix && this.precision === 'bf16-mixed') e.weight = makeComputeCopy(t)
    return e.weight
  }

  private _weight(name: string): Tensor {
    return this.own.get(name)!.weight
  }

  // float32 gradient of an own parameter, allocated as zeros on first use so inference holds none
  private grad(name: string): Tensor {
    const own = this.own.get(name)
    if (!own) fail('ERR_INTERNAL', `gradients: no parameter ${show(name)}`)
    this.needFloat32('gradients')
    return (own.grad ??= zeros(own.param.shape, { device: this.device }))
  }

  /** A config by name ('354M', '720M', '1.21B', 'small', 'tiny') merged with overrides. */
  static config(name: keyof typeof CONFIGS, overrides: Partial<TransformerLMOptions> = {}): TransformerLMOptions {
    checkOptions('overrides', overrides, LM_OPTIONS)
    const c = Object.prototype.hasOwnProperty.call(CONFIGS, name as string) ? CONFIGS[name] : undefined
    if (!c) fail('ERR_ARGUMENT', `name: expected one of ${Object.keys(CONFIGS).join(', ')}, got ${show(name)}`)
    return { ...c, ...overrides }
  }

  /** Every parameter by its docs/SPEC.md name (live tensors: optimizers update them in place). */
  parameters(): Map<string, Tensor> {
    const out = new Map<string, Tensor>()
    out.set('transformer.wte.weight', this.own.get('transformer.wte.weight')!.param)
    this.blocks.forEach((b, i) => {
      const p = `transformer.blocks.${i}.`
      out.set(p + 'attn_norm.weight', b.normWeight)
      out.set(p + 'att_proj.weight', this.own.get(p + 'att_proj.weight')!.param)
      out.set(p + 'attn_out.weight', this.own.get(p + 'attn_out.weight')!.param)
      for (const [n, t] of Object.entries(b.ffn.stateDict())) out.set(p + n, t)
    })
    out.set('transformer.ln_f.weight', this.own.get('transformer.ln_f.weight')!.param)
    out.set('transformer.ff_out.weight', this.own.get('transformer.ff_out.weight')!.param)
    return out
  }

  /** @internal what forward reads for each parameter: its bfloat16 compute copy under bf16-mixed, else the parameter itself */
  _computeWeights(): Map<string, Tensor> {
    const out = new Map<string, Tensor>()
    for (const [n, p] of this.parameters()) out.set(n, computeCopyOf(p) ?? p)
    return out
  }

  /**
   * Gradients by the same names (accumulated by backward; zeroGrad clears them). They are
   * allocated as zeros on first use (this call, backward or zeroGrad), so a model used only for
   * inference holds its parameters only; later calls return the same tensors.
   */
  gradients(): Map<string, Tensor> {
    this.needFloat32('gradients')
    const out = new Map<string, Tensor>()
    for (const [name, p] of this.parameters()) {
      if (this.own.has(name)) {
        out.set(name, this.grad(name))
        continue
      }
      const i = Number(name.split('.')[2])
      const local = name.split('.').slice(3).join('.')
      const g = this.blocks[i].ffn.grads[local]
      if (!g) fail('ERR_INTERNAL', `gradients: the FFN of block ${i} has no gradient for ${local}`)
      if (g.shape.join() !== p.shape.join()) fail('ERR_INTERNAL', `gradients: ${name} has shape ${show(g.shape)}, its parameter ${show(p.shape)}`)
      out.set(name, g)
    }
    return out
  }

  /** Whether weight decay applies (matrices and embeddings, not norm gains). */
  static decays(name: string): boolean {
    arg('name', name, string)
    return !NORM_NAMES.test(name)
  }

  /** Number of parameter values (elements). */
  numParameters(): number {
    let n = 0
    for (const t of this.parameters().values()) n += t.size
    return n
  }

  private needFloat32(what: string): void {
    if (this.config.dtype !== 'float32')
      fail('ERR_DTYPE', `${what}: a bfloat16 model runs inference only; train a float32 model, or one with precision 'bf16-mixed' (float32 master weights, bfloat16 compute; a bfloat16 checkpoint loads either way)`)
  }

  /** Sets every gradient to zero. */
  zeroGrad(): void {
    const grads = this.gradients()
    // check all first: a disposed gradient must not leave the others half cleared
    for (const [n, g] of grads) g._check(`gradient ${n}`)
    for (const g of grads.values()) zero_(g)
  }

  private checkTokens(tokens: Tensor): [number, number] {
    checkTensor('tokens', tokens, { ndim: 2, dtypes: ['int32'] })
    if (tokens.device !== this.device) fail('ERR_DEVICE', `tokens: expected a tensor on ${this.device}, got one on ${tokens.device}`)
    const [B, S] = tokens.shape
    if (B < 1) fail('ERR_SHAPE', `tokens: the batch is empty (shape ${show(tokens.shape)})`)
    if (S < 1) fail('ERR_SHAPE', `tokens: the sequences are empty (shape ${show(tokens.shape)})`)
    if (S > this.config.maxSeqLen) fail('ERR_SHAPE', `tokens: sequence length ${S} exceeds maxSeqLen ${this.config.maxSeqLen}`)
    return [B, S]
  }

  /**
   * tokens int32 [B, S] -> logits [B, S, vocabSize]. An id outside [0, vocabSize) fails the
   * embedding: the logits (and everything computed from them) reject their waits with
   * ERR_ARGUMENT; nothing else is affected. In training (train: true) the output also carries what backward needs.
   */
  forward(tokens: Tensor, opts: ForwardOptions = {}): LMOutput {
    const [B, S] = this.checkTokens(tokens)
    const o = checkOptions('opts', opts, LM_FORWARD_OPTIONS)
    const train = o.train ?? false
    if (train) this.needFloat32('forward(train: true)')
    const step = o.step ?? 0
    if (o.lastOnly && train) fail('ERR_ARGUMENT', 'lastOnly: only for inference (train: false)')
    if (o.tau !== undefined && !train) fail('ERR_ARGUMENT', 'opts.tau: only for training (train: true)')
    const tc = tokens.contiguous()
    const flat = tc.reshape([B * S])
    tc.dispose()
    let x = embedding(this._weight('transformer.wte.weight'), flat)
    const saved: (BlockSaved | BlockReplay)[] = []
    const stats: LMOutput['stats'] = []
    const aux: LMOutput['auxLoss'] = []
    this.blocks.forEach((blk, i) => {
      const layerSeed = deriveSeed(this.config.seed, 3 + i, step)
      const seed = o.noiseStream ? deriveSeed(layerSeed, o.noiseStream) : layerSeed
      const r = blk.forward(x, B, S, { train, step, noise: opts.noise ?? 'gumbel', seed, ...(o.tau !== undefined ? { tau: o.tau } : {}) })
      // a dense or k-loop FFN's stats are an empty object: the layer has no routing to report
      const st = r.stats as Partial<VersatileStats> | undefined
      stats.push(st?.expertCounts ? (st as VersatileStats | MoEStats) : undefined)
      aux.push(r.auxLoss instanceof Tensor ? r.auxLoss : undefined)
      if (r.saved) saved.push(r.saved)
      else x.dispose()
      x = r.y
    })
    const lnf = this.own.get('transformer.ln_f.weight')!.param
    const { out: xfn, rstd } = rmsnorm(x, lnf, train)
    const head = this._weight('transformer.ff_out.weight')
    if (opts.lastOnly && !train) {
      const v = xfn.reshape([B, S, this.config.dModel])
      const last = v.slice(1, S - 1, S)
      const lastRows = last.reshape([B, this.config.dModel])
      const logits = reshapeFree(matmul(lastRows, head, { transposeB: true }), [B, 1, this.config.vocabSize])
      for (const t of [v, last, lastRows, x, xfn, flat]) t.dispose()
      return lmOutput(logits, stats, aux)
    }
    if (opts.lastOnly) fail('ERR_ARGUMENT', 'lastOnly: only for inference (train: false)')
    const logits = reshapeFree(matmul(xfn, head, { transposeB: true }), [B, S, this.config.vocabSize])
    if (!train) {
      x.dispose()
      xfn.dispose()
      flat.dispose()
      return lmOutput(logits, stats, aux)
    }
    return lmOutput(logits, stats, aux, { B, S, tokens: flat, blocks: saved, xf: x, xfn, rstd: rstd! })
  }

  /** Mean cross-entropy of a training output against targets int32 [B, S] (ignoreIndex skipped). Returns loss [1]. */
  loss(out: LMOutput, targets: Tensor, ignoreIndex = -100): Tensor {
    arg('out', out, object({}, [], true))
    arg('ignoreIndex', ignoreIndex, INT32)
    const s = out._saved
    if (!s) fail('ERR_ARGUMENT', 'out: loss needs the output of forward(tokens, { train: true })')
    checkTensor('targets', targets, { ndim: 2, dtypes: ['int32'] })
    if (targets.shape[0] !== s.B || targets.shape[1] !== s.S) fail('ERR_SHAPE', `targets: expected [${s.B}, ${s.S}], got ${show(targets.shape)}`)
    const tc = targets.contiguous()
    const t = tc.reshape([s.B * s.S])
    tc.dispose()
    const logits2 = out.logits.reshape([s.B * s.S, this.config.vocabSize])
    const { loss, lse } = crossEntropy(logits2, t, ignoreIndex)
    logits2.dispose()
    // a second loss on the same output replaces the first one's saved values
    s.lse?.dispose()
    s.targets?.dispose()
    s.lse = lse
    s.targets = t
    s.ignoreIndex = ignoreIndex
    return loss
  }

  /**
   * Backward of loss(out, targets) scaled by dloss, plus auxGrad (default 1) times each layer's
   * balance loss: accumulates every gradient. Overwrites out.logits with their gradient (saves a
   * [B*S, V] buffer) and releases the saved values.
   */
  backward(out: LMOutput, dloss = 1, opts: { auxGrad?: number } = {}): void {
    arg('out', out, object({}, [], true))
    const s = out._saved
    if (!s || !s.lse || !s.targets) fail('ERR_ARGUMENT', 'out: backward needs a training output whose loss was computed')
    arg('dloss', dloss, number())
    const auxGrad = checkOptions('opts', opts, { auxGrad: optional(number()) }).auxGrad ?? 1
    this.checkBackward(out)
    const V = this.config.vocabSize
    const logits2 = out.logits.reshape([s.B * s.S, V])
    crossEntropyBackward(logits2, s.targets, s.lse, dloss, s.ignoreIndex, logits2)
    matmul(logits2, s.xfn, { transposeA: true, out: this.grad('transformer.ff_out.weight'), beta: 1 })
    const dxfn = matmul(logits2, this._weight('transformer.ff_out.weight'))
    const lnf = this.own.get('transformer.ln_f.weight')!
    let dx = rmsnormBackward(dxfn, s.xf, lnf.param, s.rstd, this.grad('transformer.ln_f.weight'))
    for (const t of [logits2, dxfn, s.xfn, s.rstd, s.lse, s.xf]) t.dispose()
    for (let i = this.blocks.length - 1; i >= 0; i--) {
      const next = this.blocks[i].backward(s.blocks[i], dx, { auxGrad })
      dx.dispose()
      dx = next
    }
    embeddingBackward(this.grad('transformer.wte.weight'), dx, s.tokens)
    dx.dispose()
    for (const b of s.blocks) b.x.dispose()
    s.tokens.dispose()
    s.targets.dispose()
    out._saved = undefined
  }

  // everything backward reads is checked before the first gradient accumulates
  private checkBackward(out: LMOutput): void {
    const s = out._saved!
    if (s.blocks.length !== this.blocks.length) fail('ERR_ARGUMENT', `out: expected saved values of ${this.blocks.length} blocks, got ${s.blocks.length}`)
    const tensors: [string, unknown][] = [['out.logits', out.logits], ['out (saved tokens)', s.tokens], ['out (saved activations)', s.xf], ['out (saved activations)', s.xfn], ['out (saved activations)', s.rstd], ['out (saved loss)', s.lse], ['out (saved targets)', s.targets]]
    s.blocks.forEach((b, i) => {
      for (const v of blockSavedTensors(b)) tensors.push([`out (saved values of block ${i})`, v])
      if ('replay' in b) return
      const rec = b.ffn as { _saved?: unknown; stats?: Record<string, unknown> }
      if (!rec._saved) fail('ERR_ARGUMENT', `out: the FFN record of block ${i} has been disposed or used by backward already`)
      for (const [k, v] of Object.entries(rec.stats ?? {})) tensors.push([`out.stats[${i}].${k}`, v])
    })
    for (const [name, v] of tensors) if (v instanceof Tensor) v._check(name)
    for (const [n, g] of this.gradients()) g._check(`gradient ${n}`)
  }

  /** Continues each prompt (any lengths) by up to maxNewTokens tokens through a GenerationEngine sized for the call; see GenerateOptions. */
  generate(prompts: readonly (readonly number[] | Int32Array)[], opts: GenerateOptions = {}): Promise<Int32Array[]> {
    return generate(this, prompts, opts)
  }

  /** All parameters by name (the live tensors). */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries(this.parameters())
  }

  /**
   * Replaces every parameter (values copied in) from Tensors (float32 or bfloat16, on the
   * model's device) or Float32Arrays. Everything is checked before anything changes: ERR_ARGUMENT
   * names every missing name and (strict, the default) every unexpected one; ERR_SHAPE,
   * ERR_DTYPE, ERR_DEVICE and ERR_DISPOSED name the bad entry. With `strict: false` names the
   * model lacks are skipped and returned in `ignored`.
   */
  loadStateDict(sd: Record<string, Tensor | Float32Array>, opts: LoadOptions = {}): LoadResult {
    if (typeof sd !== 'object' || sd === null || Array.isArray(sd)) fail('ERR_ARGUMENT', `stateDict: expected an object of tensors, got ${show(sd)}`)
    const strict = strictOf(opts)
    const params = [...this.parameters()]
    const ignored = checkNames('state dict', params.map(([n, p]) => [n, p.shape]), Object.keys(sd), strict, 'tensor')
    loadInto('state dict', params, sd, this.device)
    refreshComputeCopies(params.map(([, p]) => p))
    return { ignored }
  }

  /** Frees every parameter and gradient (the model is unusable afterwards). */
  dispose(): void {
    for (const { param, grad } of this.own.values()) {
      disposeComputeCopy(param)
      param.dispose()
      grad?.dispose()
    }
    for (const b of this.blocks) b.ffn.dispose()
  }

  /**
   * Writes every parameter to a safetensors file (in the model's dtype unless `dtype` says
   * otherwise), with the full config under the metadata key 'versatile-ffn.config' so that
   * fromFile can rebuild the model; `metadata` adds string entries of your own.
   */
  async save(path: string, opts: { dtype?: 'float32' | 'bfloat16'; metadata?: Record<string, string> } = {}): Promise<void> {
    arg('path', path, string)
    checkOptions('opts', opts, SAVE_OPTIONS)
    const md = opts.metadata
    if (md && CONFIG_KEY in md) fail('ERR_ARGUMENT', `metadata: ${show(CONFIG_KEY)} is written by save() itself`)
    const c = this.config
    const meta: Record<string, string> = { format: 'pt', ...(opts.metadata ?? {}), [CONFIG_KEY]: configJSON(c) }
    await saveSafetensors(path, this.stateDict(), { dtype: opts.dtype ?? c.dtype, metadata: meta })
  }

  /**
   * Loads a safetensors file with docs/SPEC.md's names (F32 or BF16). The file must follow the format
   * strictly (see parseSafetensors) and hold every parameter with its shape; ERR_ARGUMENT names
   * every missing tensor and (strict, the default) every tensor the model lacks, ERR_SHAPE a
   * misshapen one; on error nothing changes. Resolves to `{ ignored }`: with `strict: false`,
   * the file's tensors the model has no parameter for.
   */
  async load(path: string, opts: LoadOptions = {}): Promise<LoadResult> {
    const strict = strictOf(opts)
    const { tensors } = await loadSafetensors(path)
    return this.loadTensors(tensors, show(path), strict)
  }

  private loadTensors(tensors: Map<string, StoredTensor>, source: string, strict: boolean): LoadResult {
    const params = [...this.parameters()]
    const ignored = checkNames(source, params.map(([n, p]) => [n, p.shape]), [...tensors.keys()], strict, 'tensor')
    const sd: Record<string, Float32Array> = {}
    for (const [name, p] of params) {
      const st = tensors.get(name)!
      if (st.shape.join() !== p.shape.join()) fail('ERR_SHAPE', `${source}: tensor ${show(name)} has shape ${show(st.shape)}, the model needs ${show(p.shape)}`)
      sd[name] = st.data
    }
    loadInto(source, params, sd, this.device)
    refreshComputeCopies(params.map(([, p]) => p))
    return { ignored }
  }

  /**
   * Continued pretraining from a dense model, as the paper trains: a VersatileFFN model with the
   * dense model's sizes whose embedding, attention, norms, FFN weights (ff_norm, ff_proj, ff_out:
   * the shared FFN the virtual experts slice and the loops reuse) and head are copies of the
   * dense model's (a path to a checkpoint that save() wrote, or a dense TransformerLM), and whose
   * router and loop head get SPEC.md's init (normal 0.02 truncated at 3σ, from `seed`).
   *
   * Its first forward equals the dense model's with each block's F replaced by VersatileFFN over
   * the same weights: with h the block's post-attention state (the dense model's, exactly),
   * `y = (1 − λ)·F^(c+1)(h) + λ·(h + Σ_k w_k·FFN_{e_k}(h))` where `c = argmax(W_depth·h)`,
   * `λ = (L − 1 − c)/L`, and the experts e_k and weights w_k are the top-K softmax of `W_router·h`;
   * F^j is the dense F applied j times and FFN_e its expert slice. With maxDepth 1 (λ = 0) it is the
   * dense model's forward. Rejects with ERR_ARGUMENT when the source is not dense or a checkpoint
   * lacks the config metadata, and ERR_SHAPE when its tensors or the sizes given in opts differ from
   * its config; nothing is allocated before those checks pass.
   */
  static fromDense(source: string | TransformerLM, opts: FromDenseOptions = {}): Promise<TransformerLM> {
    return fromDense(TransformerLM, source, opts)
  }

  /**
   * Builds the model a checkpoint written by save() describes (its 'versatile-ffn.config'
   * metadata) and loads its weights; every tensor must match, none may be extra. Rejects with
   * ERR_ARGUMENT when the file has no such metadata or the config has unknown or missing keys.
   */
  static async fromFile(path: string, opts: FromFileOptions = {}): Promise<TransformerLM> {
    arg('path', path, string)
    checkOptions('opts', opts, { device: optional(deviceCheck), dtype: optional(dtypeCheck(['float32', 'bfloat16'])), precision: optional(PRECISION) })
    const device = Device.get(opts.device)
    const { tensors, metadata } = await loadSafetensors(path)
    const source = show(path)
    const cfg = parseConfig(metadata[CONFIG_KEY], source)
    let m: TransformerLM
    try {
      m = new TransformerLM({ ...cfg, device, dtype: opts.dtype ?? cfg.dtype, precision: opts.precision })
    } catch (e) {
      if (e instanceof VffnError) fail(e.code, `${source}: metadata ${show(CONFIG_KEY)}: ${e.message}`)
      throw e
    }
    try {
      m.loadTensors(tensors, source, true)
    } catch (e) {
      m.dispose()
      throw e
    }
    return m
  }
}
