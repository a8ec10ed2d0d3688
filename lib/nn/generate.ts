// model.generate: a thin wrapper over GenerationEngine (one way to decode). Each prompt is one
// request of a private engine sized for the call, so concurrent calls share no mutable state.
import { fail, show } from '../errors'
import { GenerationEngine } from '../serve/engine'
import { INT32, arrayOf, checkOptions, int, number, optional } from '../validate'
import type { TransformerLM } from './model'

/** Options of TransformerLM.generate: length, sampling (greedy at temperature 0, else temperature and top-k) and seed. */
export interface GenerateOptions {
  /** tokens to add per prompt. Default 16. */
  maxNewTokens?: number
  /** 0 (default) is greedy (ties: lowest id); > 0 samples from softmax(logits / temperature) */
  temperature?: number
  /** sample only among the k most likely tokens (0 = all). Default 0. */
  topK?: number
  /** then only among the most likely tokens whose probabilities sum to at least topP. Default 1. */
  topP?: number
  /** seed, an integer in [0, 2^32 - 1]; prompt b samples with seed + b (mod 2^32). Default 0. */
  seed?: number
  /** stop a sequence once it emits this id (the id is kept) */
  stopToken?: number
  /** stop a sequence once it emits one of these ids (the id is kept) */
  stopTokens?: readonly number[]
}

const GENERATE_OPTIONS = {
  maxNewTokens: optional(int(0)), temperature: optional(number({ min: 0 })), topK: optional(int(0)), topP: optional(number({ exclusiveMin: 0, max: 1 })),
  seed: optional(int(0, 2 ** 32 - 1)), stopToken: optional(INT32), stopTokens: optional(arrayOf(INT32)),
}

export async function generate(model: TransformerLM, prompts: readonly (readonly number[] | Int32Array)[], opts: GenerateOptions = {}): Promise<Int32Array[]> {
  const { vocabSize: V, maxSeqLen } = model.config
  if (!Array.isArray(prompts) || prompts.length === 0) fail('ERR_SHAPE', `prompts: expected a non-empty array of token arrays, got ${show(prompts)}`)
  const o = checkOptions('opts', opts, GENERATE_OPTIONS)
  const maxNew = o.maxNewTokens ?? 16
  prompts.forEach((p, b) => {
    if (!Array.isArray(p) && !(p instanceof Int32Array)) fail('ERR_ARGUMENT', `prompts[${b}]: expected an array of token ids or an Int32Array, got ${show(p)}`)
    if (p.length < 1) fail('ERR_SHAPE', `prompts[${b}]: a prompt needs at least one token`)
    for (let i = 0; i < p.length; i++)
      if (!Number.isInteger(p[i]) || p[i] < 0 || p[i] >= V)
        fail('ERR_ARGUMENT', `prompts[${b}][${i}]: token id ${show(p[i])} is outside the vocabulary [0, ${V})`)
    if (p.length + maxNew > maxSeqLen) fail('ERR_SHAPE', `maxNewTokens: prompts[${b}] has ${p.length} tokens; + ${maxNew} new exceed maxSeqLen ${maxSeqLen}`)
  })
  if (maxNew === 0) return prompts.map(() => new Int32Array(0))
  const stopTokens = [...(o.stopTokens ?? []), ...(o.stopToken === undefined ? [] : [o.stopToken])]
  const blockSize = 16
  const maxTokens = prompts.reduce((s, p) => s + Math.ceil((p.length + maxNew - 1) / blockSize) * blockSize, 0)
  const engine = new GenerationEngine(model, { maxBatch: prompts.length, maxTokens, blockSize })
  try {
    const reqs = prompts.map((p, b) => engine.generate(p, {
      maxNewTokens: maxNew, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: ((o.seed ?? 0) + b) >>> 0, stopTokens,
    }))
    return await Promise.all(reqs.map((r) => r.result))
  } finally {
    await engine.close({ cancel: true })
  }
}
