// The authors' inference strategy, rebuilt from this package's public modules and ops, to show what
// per-token early exit and the fused width path buy. It follows their released block:
//  - routing and loop decisions are read back to the host (their code takes the batch's deepest loop
//    with a host-side max);
//  - depth: the whole batch runs the dense FFN up to the deepest loop; each token then takes its own
//    loop's output (gather), scaled by 1 − λ;
//  - width: every token runs the width path; one pass per expert, over the tokens routed to it
//    (gather), with that expert's weight slices copied into a dense module of width E at each call,
//    then scaled by λ·w (a small block-diagonal matmul stands in for an elementwise row scale) and
//    scatter-added into the output.
// Shapes: T tokens, D model width, I hidden, N experts, K per token, E expert width, L loops.
import { DenseFFN } from '../nn/ffn'
import { VersatileFFN } from '../nn/versatile'
import { axpy, embedding, embeddingBackward } from '../lm_ops'
import { matmul } from '../ops'
import { Tensor, empty, tensor, zeros } from '../tensor'

/** Rows per block of the block-diagonal scaling: its cost, 2·ROWS·D per row, stays small next to 6·D·E. */
const ROWS = 16

/** o_e = floor(e·(I − E)/(N − 1)) (docs/SPEC.md), o_0 = 0 when N = 1. */
export function expertOffset(e: number, N: number, I: number, E: number): number {
  return N <= 1 ? 0 : Math.floor((e * (I - E)) / (N - 1))
}

export class AuthorsModel {
  readonly dense: DenseFFN
  readonly experts: DenseFFN[]

  constructor(readonly vf: VersatileFFN) {
    const opts = { dModel: vf.dModel, device: vf.device, dtype: vf.dtype }
    const p = vf.params
    // the depth loop is the dense FFN with the shared weights
    this.dense = new DenseFFN({ ...opts, hidden: vf.hidden })
    this.dense.loadStateDict({ 'ff_norm.weight': p['ff_norm.weight'], 'ff_proj.weight': p['ff_proj.weight'], 'ff_out.weight': p['ff_out.weight'] })
    // one dense module of width E per expert; its slices are copied in at every forward
    this.experts = Array.from({ length: vf.experts }, () => {
      const m = new DenseFFN({ ...opts, hidden: vf.expertHidden })
      m.params['ff_norm.weight'].copy_(p['ff_norm.weight'])
      return m
    })
  }

  dispose(): void {
    this.dense.dispose()
    for (const m of this.experts) m.dispose()
  }
}

interface Routing {
  loops: Int32Array
  deepest: number
  /** per loop count j (1..L): the tokens that stop there */
  byLoops: number[][]
  /** per expert: the tokens routed to it and each one's scale λ_t·w_{t,k} */
  byExpert: { tokens: number[]; scale: number[] }[]
}

/** Top-K of the router logits (ties: lower index), softmax over the K, argmax of the loop logits. */
function route(r: Float32Array, z: Float32Array, T: number, N: number, K: number, L: number): Routing {
  const loops = new Int32Array(T)
  const byLoops: number[][] = Array.from({ length: L + 1 }, () => [])
  const byExpert = Array.from({ length: N }, () => ({ tokens: [] as number[], scale: [] as number[] }))
  let deepest = 0
  for (let t = 0; t < T; t++) {
    let c = 0
    for (let j = 1; j < L; j++) if (z[t * L + j] > z[t * L + c]) c = j
    loops[t] = c + 1
    deepest = Math.max(deepest, c + 1)
    byLoops[c + 1].push(t)
    const lambda = (L - (c + 1)) / L
    const chosen: number[] = []
    for (let k = 0; k < K; k++) {
      let best = -1
      for (let e = 0; e < N; e++) if (!chosen.includes(e) && (best < 0 || r[t * N + e] > r[t * N + best])) best = e
      chosen.push(best)
    }
    const m = r[t * N + chosen[0]]
    const ex = chosen.map((e) => Math.exp(r[t * N + e] - m))
    const sum = ex.reduce((a, b) => a + b, 0)
    chosen.forEach((e, k) => {
      byExpert[e].tokens.push(t)
      byExpert[e].scale.push((lambda * ex[k]) / sum)
    })
  }
  return { loops, deepest, byLoops, byExpert }
}

/** One inference forward; resolves once the device has finished it. y [T, D] float32. */
export async function authorsForward(m: AuthorsModel, x: Tensor, probe?: () => void): Promise<{ y: Tensor; deepest: number }> {
  const vf = m.vf
  const [T, D] = x.shape
  const { experts: N, topK: K, maxDepth: L, hidden: I, expertHidden: E } = vf
  const dev = { device: vf.device }
  const p = vf.params
  const tmp: Tensor[] = []
  const keep = <U extends Tensor>(t: U): U => (tmp.push(t), t)
  const ids = (a: number[]) => keep(tensor(Int32Array.from(a), [a.length], { ...dev, dtype: 'int32' }))

  const rl = keep(matmul(x, p['expert_gate.weight'], { transposeB: true }))
  const zl = keep(matmul(x, p['depth_predictor.weight'], { transposeB: true }))
  const rt = route(await rl.data(), await zl.data(), T, N, K, L)

  // depth: every token runs the batch's deepest loop count
  const hs = [x]
  for (let i = 1; i <= rt.deepest; i++) hs.push(keep(m.dense.forward(hs[i - 1]).y))
  const y = zeros([T, D], dev)
  for (let j = 1; j <= rt.deepest; j++) {
    if (rt.byLoops[j].length === 0) continue
    const idx = ids(rt.byLoops[j])
    const g = keep(embedding(hs[j], idx))
    axpy(g, g, j / L - 1) // g ← (1 − λ_j)·g, λ_j = (L − j)/L
    embeddingBackward(y, g, idx)
  }

  // width: every token, one pass per expert with copied weight slices
  for (let e = 0; e < N; e++) {
    const { tokens, scale } = rt.byExpert[e]
    const n = tokens.length
    if (n === 0) continue
    const o = expertOffset(e, N, I, E)
    const ex = m.experts[e]
    ex.params['ff_proj.weight'].rows(0, E).copy_(p['ff_proj.weight'].rows(o, o + E))
    ex.params['ff_proj.weight'].rows(E, 2 * E).copy_(p['ff_proj.weight'].rows(I + o, I + o + E))
    ex.params['ff_out.weight'].copy_(p['ff_out.weight'].cols(o, o + E))
    const idx = ids(tokens)
    const out = keep(ex.forward(keep(embedding(x, idx))).y) // x + FFN_e(x) on the routed rows
    const diag = new Float32Array(n * ROWS)
    for (let r = 0; r < n; r++) diag[r * ROWS + (r % ROWS)] = scale[r]
    const dg = keep(tensor(diag, [n, ROWS], dev))
    const scaled = keep(empty([n, D], dev))
    for (let r0 = 0; r0 < n; r0 += ROWS) {
      const r1 = Math.min(n, r0 + ROWS)
      const a = dg.rows(r0, r1).cols(0, r1 - r0)
      const b = out.rows(r0, r1)
      const c = scaled.rows(r0, r1)
      matmul(a, b, { out: c })
      for (const v of [a, b, c]) v.dispose()
    }
    embeddingBackward(y, scaled, idx)
  }
  probe?.()
  await vf.device.sync()
  for (const t of tmp) t.dispose()
  return { y, deepest: rt.deepest }
}
