// The serving ops as the decode step calls them, with the host-side index arrays the scheduler
// already holds. STAND-IN: composed from existing ops (copy_, rope, attention) and a JS sampler
// until the native kvWrite, pagedAttention, ropeRows and sample land; the signatures stay.
import { attention, rope } from '../lm_ops'
import { Tensor, empty } from '../tensor'

/** Writes row t of k and v [T, D] at flat slot slots[t] of the layer's pools [numBlocks, blockSize, D]. */
export function writeKV(kPool: Tensor, vPool: Tensor, k: Tensor, v: Tensor, slots: Int32Array): void {
  const bs = kPool.shape[1]
  for (let t = 0; t < slots.length;) {
    // a run of consecutive slots inside one block is one copy
    let n = 1
    while (t + n < slots.length && slots[t + n] === slots[t] + n && (slots[t] % bs) + n < bs) n++
    const blk = Math.floor(slots[t] / bs), off = slots[t] % bs
    for (const [pool, src] of [[kPool, k], [vPool, v]] as const) {
      const b = pool.slice(0, blk, blk + 1)
      const dst = b.slice(1, off, off + n)
      const s = src.rows(t, t + n)
      dst.copy_(s)
      for (const x of [b, dst, s]) x.dispose()
    }
    t += n
  }
}

/** Causal attention of q [B, Sq, C] over each row's paged keys: lens[b] keys, table row-major [B, maxBlocks]. */
export function attendPaged(q: Tensor, kPool: Tensor, vPool: Tensor, table: Int32Array, lens: Int32Array, heads: number): Tensor {
  const [B, Sq, C] = q.shape
  const bs = kPool.shape[1]
  const maxBlocks = table.length / B
  const out = empty([B, Sq, C], { device: q.device })
  for (let b = 0; b < B; b++) {
    const L = lens[b]
    const kv = [empty([1, L, C], { device: q.device }), empty([1, L, C], { device: q.device })]
    for (let j = 0; j * bs < L; j++) {
      const n = Math.min(bs, L - j * bs), blk = table[b * maxBlocks + j]
      for (const [pool, dstAll] of [[kPool, kv[0]], [vPool, kv[1]]] as const) {
        const src = pool.slice(0, blk, blk + 1), s2 = src.slice(1, 0, n), dst = dstAll.slice(1, j * bs, j * bs + n)
        dst.copy_(s2)
        for (const x of [src, s2, dst]) x.dispose()
      }
    }
    const qb = q.slice(0, b, b + 1), ob = out.slice(0, b, b + 1)
    const r = attention(qb, kv[0], kv[1], heads, { qOffset: L - Sq, out: ob })
    for (const x of [qb, ob, r.lse, ...kv]) x.dispose()
  }
  return out
}

/** Rotary in place on x [B, S, H*hd], row b's token s at position starts[b] + s. */
export function ropeAt(x: Tensor, heads: number, starts: Int32Array, theta: number): void {
  for (let b = 0; b < starts.length; b++) {
    const xb = x.slice(0, b, b + 1)
    rope(xb, heads, starts[b], { theta })
    xb.dispose()
  }
}

/** The sampling rule of one row, in double: see sampleRows. Returns [id, log softmax(row)[id]]. */
function sampleRow(row: Float32Array, temperature: number, topK: number, topP: number, u: number): [number, number] {
  const V = row.length
  let mx = -Infinity
  for (let j = 0; j < V; j++) mx = Math.max(mx, row[j])
  let lse = 0
  for (let j = 0; j < V; j++) lse += Math.exp(row[j] - mx)
  const logp = (id: number) => row[id] - mx - Math.log(lse)
  if (temperature === 0) {
    let best = 0
    for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j
    return [best, logp(best)]
  }
  const z = Array.from(row, (x) => x / temperature)
  let ids = Array.from({ length: V }, (_, j) => j).sort((a, b) => z[b] - z[a] || a - b)
  if (topK > 0 && topK < V) ids = ids.slice(0, topK)
  const zmax = z[ids[0]]
  let w = ids.map((j) => Math.exp(z[j] - zmax))
  if (topP < 1) {
    const total = w.reduce((s, x) => s + x, 0)
    let c = 0, n = 0
    while (n < ids.length) {
      c += w[n++] / total
      if (c >= topP) break
    }
    ids = ids.slice(0, n)
    w = w.slice(0, n)
  }
  const r = u * w.reduce((s, x) => s + x, 0)
  let run = 0
  for (let i = 0; i < ids.length; i++) {
    run += w[i]
    if (run > r) return [ids[i], logp(ids[i])]
  }
  return [ids[ids.length - 1], logp(ids[ids.length - 1])]
}

/** Samples one id per row of logits [B, V]; params [B*4] = (temperature, topK, topP, u) per row. */
export async function sampleRows(logits: Tensor, params: Float32Array): Promise<{ ids: Int32Array; logprobs: Float32Array }> {
  const [B, V] = logits.shape
  const all = await logits.data()
  const ids = new Int32Array(B), logprobs = new Float32Array(B)
  for (let b = 0; b < B; b++) [ids[b], logprobs[b]] = sampleRow(all.subarray(b * V, (b + 1) * V), params[4 * b], params[4 * b + 1], params[4 * b + 2], params[4 * b + 3])
  return { ids, logprobs }
}
