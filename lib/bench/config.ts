// Benchmark shapes and docs/SPEC.md's FLOP accounting.
// D model width, I SwiGLU intermediate, N virtual experts, K experts per token, E expert width,
// L maximum depth, T tokens.

export interface Shape {
  dModel: number
  hidden: number
  experts: number
  topK: number
  maxDepth: number
  expertHidden: number
}

export type ConfigName = 'small' | 'tiny' | '354m' | '720m' | '1.21b'

type BaseShape = Omit<Shape, 'expertHidden'> & { tokens: number }

/**
 * The paper's FFN shapes (docs/SPEC.md), plus `small` (the default: large enough that per-call overheads
 * do not hide what early exit buys, a few seconds on two cores) and `tiny` (for quick checks).
 */
export const CONFIGS: Record<ConfigName, BaseShape> = {
  small: { dModel: 512, hidden: 2048, experts: 8, topK: 2, maxDepth: 4, tokens: 512 },
  tiny: { dModel: 256, hidden: 1024, experts: 8, topK: 2, maxDepth: 4, tokens: 256 },
  '354m': { dModel: 1024, hidden: 4096, experts: 8, topK: 2, maxDepth: 4, tokens: 1024 },
  '720m': { dModel: 1536, hidden: 6144, experts: 8, topK: 2, maxDepth: 4, tokens: 1024 },
  '1.21b': { dModel: 2048, hidden: 8192, experts: 8, topK: 2, maxDepth: 4, tokens: 1024 },
}

export type DepthMode =
  | { kind: 'random-init' }
  | { kind: 'uniform' }
  | { kind: 'shallow' }
  | { kind: 'deep' }
  | { kind: 'fixed'; loops: number }

export function depthName(d: DepthMode): string {
  return d.kind === 'fixed' ? `fixed:${d.loops}` : d.kind
}

/** Bytes per element of a float dtype. */
export function dtypeBytes(dtype: string): number {
  return dtype === 'bfloat16' ? 2 : 4
}

/** Parameters of a VersatileFFN (the dense FFN has the first three): norm, ff_proj, ff_out, router, loop head. */
export function paramCount(s: Shape, versatile: boolean): number {
  const dense = s.dModel + 2 * s.hidden * s.dModel + s.dModel * s.hidden
  return versatile ? dense + s.experts * s.dModel + s.maxDepth * s.dModel : dense
}

// ---- FLOP accounting (docs/SPEC.md). One multiply-add = 2 FLOPs; a SwiGLU FFN of width W costs 6·D·W per token.
// docs/SPEC.md fixes forward FLOPs only; backward is counted as twice the forward FLOPs of the work it has to
// redo (the usual 2x for the two gradient GEMMs per forward GEMM).

export function flopsDenseForward(s: Shape, tokens: number): number {
  return 6 * s.dModel * s.hidden * tokens
}

/** Forward plus backward of the dense FFN. */
export function flopsDenseTrain(s: Shape, tokens: number): number {
  return 3 * flopsDenseForward(s, tokens)
}

/** Width path of one token: K experts of width E. */
export function flopsWidthPerToken(s: Shape): number {
  return 6 * s.dModel * s.expertHidden * s.topK
}

/**
 * VersatileFFN inference: 6·D·I·loops_t for the depth path of each token, plus 6·D·E·K for its width
 * path when λ_t > 0 (a token with λ = 0 skips it), both read from the forward's stats.
 */
export function flopsVersatileForward(s: Shape, loops: ArrayLike<number>, lambda: ArrayLike<number>): number {
  if (loops.length !== lambda.length) throw new Error(`loops (${loops.length}) and lambda (${lambda.length}) differ in length`)
  let f = 0
  for (let t = 0; t < loops.length; t++) {
    f += 6 * s.dModel * s.hidden * loops[t]
    if (lambda[t] > 0) f += flopsWidthPerToken(s)
  }
  return f
}

/**
 * VersatileFFN training step: forward 6·D·I·L + 6·D·E·K per token (all loops, always the width path);
 * backward walks each token back from its own depth only (docs/SPEC.md: loops beyond it get no gradient),
 * 2·6·D·I·loops_t, and through the width path where λ_t > 0 (λ scales its gradient; a token at the
 * last loop, λ = 0, is skipped), 2·6·D·E·K.
 */
export function flopsVersatileTrain(s: Shape, loops: ArrayLike<number>): number {
  const fwd = loops.length * (6 * s.dModel * s.hidden * s.maxDepth + flopsWidthPerToken(s))
  let bwd = 0
  for (let t = 0; t < loops.length; t++)
    bwd += 2 * (6 * s.dModel * s.hidden * loops[t] + (loops[t] < s.maxDepth ? flopsWidthPerToken(s) : 0))
  return fwd + bwd
}

/** The k-loop baseline: every token runs the dense FFN L times. */
export function flopsLoopsForward(s: Shape, tokens: number): number {
  return s.maxDepth * flopsDenseForward(s, tokens)
}

export function flopsLoopsTrain(s: Shape, tokens: number): number {
  return s.maxDepth * flopsDenseTrain(s, tokens)
}

/**
 * The mixture-of-experts baseline at equal active parameters: each token runs K experts of width
 * floor(I/K), the width moeExpertHidden gives (one SwiGLU FFN of about the dense width per token).
 */
export function flopsMoEForward(s: Shape, tokens: number): number {
  return tokens * 6 * s.dModel * moeExpertHidden(s) * s.topK
}

/** Forward plus backward of the mixture of experts (backward = 2 × forward, as for the dense FFN). */
export function flopsMoETrain(s: Shape, tokens: number): number {
  return 3 * flopsMoEForward(s, tokens)
}

/** The MoE case's expert width: floor(I/K), so its K active experts match the dense FFN's width (equal active parameters). */
export function moeExpertHidden(s: Shape): number {
  return Math.max(1, Math.floor(s.hidden / s.topK))
}

/** The authors' strategy: every token runs the batch's deepest loop count, and every token the width path. */
export function flopsAuthorsForward(s: Shape, tokens: number, deepest: number): number {
  return tokens * (6 * s.dModel * s.hidden * deepest + flopsWidthPerToken(s))
}

/** The cases, in the order they run and print. */
export const CASE_NAMES = [
  'dense.forward',
  'dense.train',
  'versatile.forward',
  'versatile.train',
  'moe.forward',
  'moe.train',
  'loops.forward',
  'loops.train',
  'authors.forward',
] as const
export type CaseName = (typeof CASE_NAMES)[number]

export const CASE_HELP: Record<CaseName, string> = {
  'dense.forward': 'dense FFN, inference forward (the baseline of every forward ratio)',
  'dense.train': 'dense FFN, forward + backward (the baseline of every training ratio)',
  'versatile.forward': 'VersatileFFN inference: per-token early exit, fused width path',
  'versatile.train': 'VersatileFFN training step: forward (Gumbel) + backward',
  'moe.forward': 'mixture-of-experts baseline, inference: N experts of width floor(I/K), K per token (equal active parameters)',
  'moe.train': 'mixture-of-experts baseline, forward + backward (with the balance loss)',
  'loops.forward': 'k-loop baseline: every token runs the dense FFN L times',
  'loops.train': 'k-loop baseline, forward + backward',
  'authors.forward': "authors' strategy from public ops: all tokens to the deepest loop, one pass per expert with copied weights",
}
