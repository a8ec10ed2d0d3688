// The serving ops as the decode step calls them: the scheduler holds slots, block tables,
// lengths and positions as host arrays; these put them in int32 tensors for the native ops.
import type { Tensor } from '../tensor'
import { tensor } from '../tensor'
import { kvWrite, pagedAttention, ropeRows, sample } from '../serve_ops'

const ints = (a: Int32Array, shape: number[], like: Tensor) => tensor(a, shape, { dtype: 'int32', device: like.device })

/** Writes row t of k and v [T, D] at flat slot slots[t] of the layer's pools [numBlocks, blockSize, D]. */
export function writeKV(kPool: Tensor, vPool: Tensor, k: Tensor, v: Tensor, slots: Int32Array): void {
  const s = ints(slots, [slots.length], k)
  try {
    kvWrite(kPool, vPool, k, v, s)
  } finally {
    s.dispose()
  }
}

/** Causal attention of q [B, Sq, C] over each row's paged keys: lens[b] keys, table row-major [B, maxBlocks]. */
export function attendPaged(q: Tensor, kPool: Tensor, vPool: Tensor, table: Int32Array, lens: Int32Array, heads: number): Tensor {
  const B = q.shape[0]
  const bt = ints(table, [B, table.length / B], q), ln = ints(lens, [B], q)
  try {
    return pagedAttention(q, kPool, vPool, bt, ln, heads)
  } finally {
    bt.dispose()
    ln.dispose()
  }
}

/** Rotary in place on x [B, S, H*hd], row b's token s at position starts[b] + s. */
export function ropeAt(x: Tensor, heads: number, starts: Int32Array, theta: number): void {
  const s = ints(starts, [starts.length], x)
  try {
    ropeRows(x, heads, s, { theta })
  } finally {
    s.dispose()
  }
}

/** Samples one id per row of logits [B, V] on the device; params [B*4] = (temperature, topK, topP, u) per row. Only ids and log-probabilities are read back. */
export async function sampleRows(logits: Tensor, params: Float32Array): Promise<{ ids: Int32Array; logprobs: Float32Array }> {
  const B = logits.shape[0]
  const p = tensor(params, [B, 4], { device: logits.device })
  let r
  try {
    r = sample(logits, p)
  } finally {
    p.dispose()
  }
  try {
    return { ids: await r.ids.intData(), logprobs: await r.logprobs.data() }
  } finally {
    r.ids.dispose()
    r.logprobs.dispose()
  }
}
