// One batched step of the model over the paged KV pool: every row is one sequence's next tokens
// (one for a decoding sequence, a chunk of prompt for a prefilling one). The token-wise work
// (norms, projections, FFN with per-token early exit) runs on all rows flattened to [T, D];
// rotary and attention run per group of rows of equal length (all the one-token rows together).
import { embedding } from '../lm_ops'
import { matmul, reshapeFree } from '../ops'
import { Tensor, empty, tensor } from '../tensor'
import { ROPE_THETA } from '../nn/attention'
import { rmsnorm } from '../nn/block'
import type { TransformerLM } from '../nn/model'
import { kvWrite, pagedAttention, ropeRows } from '../serve_ops'
import type { KVPool } from './pool'

/** @internal one sequence's part of a step */
export interface StepRow {
  /** this step's input ids */
  tokens: Int32Array
  /** position of tokens[0] in the sequence (= keys already cached) */
  start: number
  /** the sequence's block table */
  blocks: readonly number[]
  /** whether the logits after the last token are wanted */
  sample: boolean
}

/** @internal rows of equal length, which share one rotary and one attention call */
export interface Group {
  /** first flat row */
  at: number
  B: number
  S: number
  starts: Int32Array
  lens: Int32Array
  /** [B, widest block table] */
  table: Int32Array
}

/** @internal a step's index tensors (int32), made once per step and read by every layer */
export interface StepInputs {
  /** [T] input ids */
  tok: Tensor
  /** [T] flat KV slot of each row */
  slots: Tensor
  /** per group: starts [B], lens [B], table [B, MB] */
  groups: { starts: Tensor; lens: Tensor; table: Tensor }[]
  /** [number of sampled rows] flat rows whose logits are wanted; absent when none */
  picks?: Tensor
}

// the index arrays of one step as int32 tensors
const ints = (a: Int32Array, shape: number[], device: TransformerLM['device']) => tensor(a, shape, { dtype: 'int32', device })

// rows of equal length share one rotary and one attention call
function groups(rows: readonly StepRow[]): Group[] {
  const out: Group[] = []
  let at = 0
  for (let i = 0; i < rows.length;) {
    let j = i + 1
    while (j < rows.length && rows[j].tokens.length === rows[i].tokens.length) j++
    const g = rows.slice(i, j)
    const width = Math.max(...g.map((r) => r.blocks.length))
    const table = new Int32Array(g.length * width)
    g.forEach((r, b) => table.set(r.blocks, b * width))
    const S = rows[i].tokens.length
    out.push({ at, B: g.length, S, starts: Int32Array.from(g, (r) => r.start), lens: Int32Array.from(g, (r) => r.start + S), table })
    at += g.length * S
    i = j
  }
  return out
}

/** @internal the flat slot of position p of a sequence with block table `blocks` */
export const slotOf = (blocks: readonly number[], p: number, bs: number): number => blocks[Math.floor(p / bs)] * bs + (p % bs)

/**
 * @internal Runs the rows (caller orders them so equal lengths are adjacent), writing their keys
 * and values into the pool; returns logits [number of sampled rows, vocabSize], in row order
 * (undefined when no row samples).
 */
export function runStep(model: TransformerLM, pool: KVPool, rows: readonly StepRow[]): Tensor | undefined {
  const bs = pool.blockSize
  const T = rows.reduce((s, r) => s + r.tokens.length, 0)
  const ids = new Int32Array(T), slots = new Int32Array(T)
  const picks: number[] = []
  let t = 0
  for (const r of rows) {
    for (let s = 0; s < r.tokens.length; s++, t++) {
      ids[t] = r.tokens[s]
      slots[t] = slotOf(r.blocks, r.start + s, bs)
    }
    if (r.sample) picks.push(t - 1)
  }
  const gs = groups(rows)
  const dev = model.device
  const made: Tensor[] = []
  const mk = (a: Int32Array, shape: number[]) => {
    const x = ints(a, shape, dev)
    made.push(x)
    return x
  }
  try {
    const inp: StepInputs = {
      tok: mk(ids, [T]), slots: mk(slots, [T]),
      groups: gs.map((g) => ({ starts: mk(g.starts, [g.B]), lens: mk(g.lens, [g.B]), table: mk(g.table, [g.B, g.table.length / g.B]) })),
      picks: picks.length > 0 ? mk(Int32Array.from(picks), [picks.length]) : undefined,
    }
    return stepOps(model, pool, gs, T, inp)
  } finally {
    for (const x of made) x.dispose()
  }
}

/**
 * @internal The ops of one step over index tensors the caller owns (runStep makes them per step;
 * a recorded decode step, graph.ts, keeps them and rewrites their values). gs gives each group's
 * place and size (its index arrays are not read here).
 */
export function stepOps(model: TransformerLM, pool: KVPool, gs: readonly Pick<Group, 'at' | 'B' | 'S'>[], T: number, inp: StepInputs): Tensor | undefined {
  const { dModel: D, nHeads: H } = model.config
  // what the model's forward reads (bf16-mixed: the bfloat16 compute copies), so decoding matches it
  const params = model._computeWeights()
  const dev = { device: model.device }
  let x = embedding(params.get('transformer.wte.weight')!, inp.tok)
  const gt = inp.groups
  model.blocks.forEach((blk, i) => {
    const { k: kPool, v: vPool } = pool.layers[i]
    const { out: xn } = rmsnorm(x, blk.normWeight, false)
    const qkv = matmul(xn, blk.attn.params['att_proj.weight'], { transposeB: true })
    xn.dispose()
    const view = (g: Pick<Group, 'at' | 'B' | 'S'>, a: number, b: number) => {
      const r = qkv.rows(g.at, g.at + g.B * g.S)
      const v3 = reshapeFree(r, [g.B, g.S, 3 * D])
      const out = v3.slice(2, a, b)
      v3.dispose()
      return out
    }
    gs.forEach((g, j) => {
      const qk = view(g, 0, 2 * D)
      ropeRows(qk, 2 * H, gt[j].starts, { theta: ROPE_THETA })
      qk.dispose()
    })
    const k = qkv.cols(D, 2 * D), v = qkv.cols(2 * D, 3 * D)
    kvWrite(kPool, vPool, k, v, inp.slots)
    k.dispose()
    v.dispose()
    // one group (all decoding, or one prompt chunk): its output already is the [T, D] rows
    const att = gs.length === 1 ? undefined : empty([T, D], dev)
    let single: Tensor | undefined
    for (const [j, g] of gs.entries()) {
      const q = view(g, 0, D)
      const o = pagedAttention(q, kPool, vPool, gt[j].table, gt[j].lens, H)
      q.dispose()
      if (!att) {
        single = reshapeFree(o, [T, D])
        continue
      }
      const dst = att.rows(g.at, g.at + g.B * g.S)
      dst.copy_(o)
      dst.dispose()
      o.dispose()
    }
    qkv.dispose()
    const a = (att ?? single)!
    // x is this step's own: the residual sum goes into it in place
    matmul(a, blk.attn.params['attn_out.weight'], { transposeB: true, out: x, alpha: 1, beta: 1 })
    a.dispose()
    const f = blk.ffn.forward(x, { train: false })
    x.dispose()
    ;(f.stats as { dispose?: () => void } | undefined)?.dispose?.()
    x = f.y
  })
  const { out: xf } = rmsnorm(x, params.get('transformer.ln_f.weight')!, false)
  x.dispose()
  if (!inp.picks) {
    xf.dispose()
    return undefined
  }
  // gather the sampled rows (an embedding lookup over the rows of xf)
  const last = embedding(xf, inp.picks)
  xf.dispose()
  const logits = matmul(last, params.get('transformer.ff_out.weight')!, { transposeB: true })
  last.dispose()
  return logits
}
