// Incremental decoding with a KV cache: one prefill over the prompt, then one token per step.
// Each call owns its caches and random state, so concurrent requests on one model never share
// mutable state (the model's weights are only read).
import { fail, show } from '../errors'
import { tensor } from '../tensor'
import { INT32, checkOptions, int, number, optional } from '../validate'
import type { LMOutput, TransformerLM } from './model'

/** Options of TransformerLM.generate: length, sampling (greedy at temperature 0, else temperature and top-k) and seed. */
export interface GenerateOptions {
  /** tokens to add per prompt. Default 16. */
  maxNewTokens?: number
  /** 0 (default) is greedy (ties: lowest id); > 0 samples from softmax(logits / temperature) */
  temperature?: number
  /** sample only among the k most likely tokens (0 = all). Default 0. */
  topK?: number
  /** seed of the sampler, an integer in [0, 2^32 - 1] (its state is 32 bits). Default 0. */
  seed?: number
  /** stop a sequence once it emits this id (the id is kept) */
  stopToken?: number
}

// mulberry32: a small seeded generator, one per request
function sampler(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Picks a token from one row of logits. */
export function pickToken(row: Float32Array, temperature: number, topK: number, rand: () => number): number {
  const V = row.length
  if (temperature === 0) {
    let best = 0
    for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j
    return best
  }
  let ids = Array.from({ length: V }, (_, j) => j)
  if (topK > 0 && topK < V) {
    ids.sort((a, b) => row[b] - row[a] || a - b)
    ids = ids.slice(0, topK)
  }
  let mx = -Infinity
  for (const j of ids) mx = Math.max(mx, row[j])
  const w = ids.map((j) => Math.exp((row[j] - mx) / temperature))
  let total = 0
  for (const x of w) total += x
  let u = rand() * total
  for (let i = 0; i < ids.length; i++) {
    u -= w[i]
    if (u < 0) return ids[i]
  }
  return ids[ids.length - 1]
}

const GENERATE_OPTIONS = {
  maxNewTokens: optional(int(0)), temperature: optional(number({ min: 0 })), topK: optional(int(0)),
  seed: optional(int(0, 2 ** 32 - 1)), stopToken: optional(INT32),
}

export async function generate(model: TransformerLM, prompts: readonly (readonly number[] | Int32Array)[], opts: GenerateOptions = {}): Promise<Int32Array[]> {
  const { vocabSize: V, maxSeqLen } = model.config
  if (!Array.isArray(prompts) || prompts.length === 0) fail('ERR_SHAPE', `prompts: expected a non-empty array of token arrays, got ${show(prompts)}`)
  const o = checkOptions('opts', opts, GENERATE_OPTIONS)
  prompts.forEach((p, b) => {
    if (!Array.isArray(p) && !(p instanceof Int32Array)) fail('ERR_ARGUMENT', `prompts[${b}]: expected an array of token ids or an Int32Array, got ${show(p)}`)
  })
  const B = prompts.length
  const P = prompts[0].length
  if (P < 1) fail('ERR_SHAPE', 'prompts: a prompt needs at least one token')
  prompts.forEach((p, b) => {
    if (p.length !== P) fail('ERR_SHAPE', `prompts[${b}]: prompts in one call need equal lengths (${P}), got ${p.length}`)
    for (let i = 0; i < p.length; i++)
      if (!Number.isInteger(p[i]) || p[i] < 0 || p[i] >= V)
        fail('ERR_ARGUMENT', `prompts[${b}][${i}]: token id ${show(p[i])} is outside the vocabulary [0, ${V})`)
  })
  const maxNew = o.maxNewTokens ?? 16
  const temperature = o.temperature ?? 0
  const topK = o.topK ?? 0
  const rand = sampler(o.seed ?? 0)
  if (P + maxNew > maxSeqLen) fail('ERR_SHAPE', `maxNewTokens: ${P} prompt tokens + ${maxNew} new exceed maxSeqLen ${maxSeqLen}`)
  const out = prompts.map(() => [] as number[])
  if (maxNew === 0) return out.map((o) => Int32Array.from(o))
  const caches = model.newCaches(B, P + maxNew)
  const done = new Array<boolean>(B).fill(false)
  let input = Int32Array.from(prompts.flatMap((p) => Array.from(p)))
  let S = P
  try {
    for (let step = 0; step < maxNew; step++) {
      const toks = tensor(input, [B, S], { dtype: 'int32', device: model.device })
      let r: LMOutput
      try {
        // only the last position of each sequence is needed
        r = model.forward(toks, { train: false, caches, lastOnly: true })
      } finally {
        toks.dispose()
      }
      let rows: Float32Array
      try {
        rows = await r.logits.data()
      } finally {
        // a failed wait frees the step's outputs too
        r.dispose()
      }
      const next = new Int32Array(B)
      for (let b = 0; b < B; b++) {
        next[b] = done[b] ? out[b][out[b].length - 1] : pickToken(rows.subarray(b * V, (b + 1) * V), temperature, topK, rand)
        if (!done[b]) out[b].push(next[b])
        if (o.stopToken !== undefined && next[b] === o.stopToken) done[b] = true
      }
      if (done.every(Boolean)) break
      input = next
      S = 1
    }
  } finally {
    for (const c of caches) {
      c.k.dispose()
      c.v.dispose()
    }
  }
  return out.map((o) => Int32Array.from(o))
}

