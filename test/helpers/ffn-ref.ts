// float64 references of docs/SPEC.md's FFN math, written plainly (loops over tokens, experts and loops,
// every loop run and then selected) and independent of the kernels. Matrices are row-major arrays.
import { _native } from '../../lib/index'

export type Vec = Float64Array
export interface Weights {
  D: number; I: number
  norm: Vec; proj: Vec; out: Vec   // [D], [2I, D], [D, I]
  router?: Vec; depth?: Vec        // [N, D], [L, D]
}
export interface VCfg { N: number; K: number; L: number; E: number; alpha: number }

/** deterministic test data (mulberry32), uniform in [-scale, scale] */
export function rand(n: number, seed: number, scale = 1): Float64Array {
  let a = seed >>> 0
  const out = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale
  }
  return out
}

export const silu = (v: number) => v / (1 + Math.exp(-v))
export const offsetOf = (e: number, N: number, I: number, E: number) => (N <= 1 ? 0 : Math.floor((e * (I - E)) / (N - 1)))

export function norm(x: Vec, w: Vec): Vec {
  const D = x.length
  let ss = 0
  for (let i = 0; i < D; i++) ss += x[i] * x[i]
  const r = 1 / Math.sqrt(ss / D + 1e-6)
  return x.map((v, i) => v * r * w[i])
}

/** W_out[:, off..off+E) · (silu(W_gate[off..] n) ⊙ (W_up[off..] n)), no residual */
export function ffnSlice(x: Vec, w: Weights, off: number, E: number): Vec {
  const { D, I } = w
  const n = norm(x, w.norm)
  const out = new Float64Array(D)
  for (let c = off; c < off + E; c++) {
    let u = 0, g = 0
    for (let i = 0; i < D; i++) {
      u += w.proj[c * D + i] * n[i]
      g += w.proj[(I + c) * D + i] * n[i]
    }
    const a = silu(g) * u
    for (let d = 0; d < D; d++) out[d] += w.out[d * I + c] * a
  }
  return out
}

/** F(x) = x + FFN(x) over the whole intermediate dimension */
export function dense(x: Vec, w: Weights): Vec {
  const f = ffnSlice(x, w, 0, w.I)
  return x.map((v, i) => v + f[i])
}

export function matvec(W: Vec, x: Vec, rows: number): Vec {
  const D = x.length
  const out = new Float64Array(rows)
  for (let r = 0; r < rows; r++) for (let i = 0; i < D; i++) out[r] += W[r * D + i] * x[i]
  return out
}

/** Gumbel noise as docs/SPEC.md fixes it: Philox counter (t, j/4, 0, 0), word j mod 4 */
export function gumbel(seed: bigint, t: number, j: number): number {
  const lo = Number(seed & 0xffffffffn), hi = Number(seed >> 32n)
  const words = _native.philox(t, Math.floor(j / 4), 0, 0, lo, hi)
  const u = ((words[j % 4] >>> 8) + 0.5) * 2 ** -24
  return -Math.log(-Math.log(u))
}

export interface TokenResult {
  y: Vec; loops: number; lambda: number; experts: number[]; weights: number[]
  p: number[]; xs: Vec[]; xw: Vec; routerP: number[]
}

/**
 * One token of VersatileFFN. noise: g per loop logit (training), or null (inference argmax).
 * p0 (training surrogate): the straight-through value h − stopgrad(p) + p with p0 the stopped p,
 * so finite differences of the result give docs/SPEC.md's straight-through gradient.
 */
export function versatileToken(x: Vec, w: Weights, cfg: VCfg, train: boolean, g: number[] | null, tau: number, p0?: number[]): TokenResult {
  const { N, K, L, E } = cfg
  const r = matvec(w.router!, x, N)
  const experts: number[] = []
  for (let k = 0; k < K; k++) {
    let best = -1
    for (let e = 0; e < N; e++) if (!experts.includes(e) && (best < 0 || r[e] > r[best])) best = e
    experts.push(best)
  }
  const m = r[experts[0]]
  const ex = experts.map((e) => Math.exp(r[e] - m))
  const weights = ex.map((v) => v / ex.reduce((a, b) => a + b, 0))
  const rmax = Math.max(...r)
  const re = Array.from(r, (v) => Math.exp(v - rmax))
  const routerP = re.map((v) => v / re.reduce((a, b) => a + b, 0))
  const xw = Float64Array.from(x)
  experts.forEach((e, k) => {
    const f = ffnSlice(x, w, offsetOf(e, N, w.I, E), E)
    for (let i = 0; i < x.length; i++) xw[i] += weights[k] * f[i]
  })
  // every loop, then select
  const xs: Vec[] = [x]
  for (let j = 1; j <= L; j++) xs.push(dense(xs[j - 1], w))
  const z = Array.from(matvec(w.depth!, x, L), (v, j) => v + (g ? g[j] : 0))
  let c = 0
  for (let j = 1; j < L; j++) if (z[j] > z[c]) c = j
  const zm = Math.max(...z)
  const pe = z.map((v) => Math.exp((v - zm) / tau))
  const p = pe.map((v) => v / pe.reduce((a, b) => a + b, 0))
  const h = p.map((_, j) => (j === c ? 1 : 0) + (train && p0 ? p[j] - p0[j] : 0))
  const loopsSt = h.reduce((a, v, j) => a + (j + 1) * v, 0)
  const lambda = (L - loopsSt) / L
  const xd = new Float64Array(x.length)
  for (let j = 0; j < L; j++) for (let i = 0; i < x.length; i++) xd[i] += h[j] * xs[j + 1][i]
  const y = xd.map((v, i) => (1 - lambda) * v + lambda * xw[i])
  return { y, loops: c + 1, lambda: (L - (c + 1)) / L, experts, weights, p, xs, xw, routerP }
}

/** balance loss α·N·Σ_e f_e·P_e; f from the chosen experts (held fixed), P from router softmaxes */
export function balanceLoss(toks: TokenResult[], cfg: VCfg, fixedF?: number[]): number {
  const { N, K, alpha } = cfg
  const T = toks.length
  const f = fixedF ?? Array.from({ length: N }, (_, e) => toks.reduce((a, t) => a + t.experts.filter((v) => v === e).length, 0) / (T * K))
  let aux = 0
  for (let e = 0; e < N; e++) aux += f[e] * toks.reduce((a, t) => a + t.routerP[e], 0) / T
  return alpha * N * aux
}

/** float64 reference values as the float32 tensor data they are compared with */
export const f32 = (a: Float64Array) => Float32Array.from(a)

/** Largest |a[i] − b[i]|; Infinity for different lengths or any NaN (so a NaN never passes). */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i])
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d
  }
  return m
}
