// Builds a block's FFN from its own module: the dense baseline, VersatileFFN, the mixture of experts
// or the k-loop FFN; checks a model config's FFN sizes and records what the FFNs resolved.
import { DenseFFN } from './ffn'
import { LoopFFN } from './loop'
import { MoEFFN, checkMoESizes } from './moe'
import { VersatileFFN, VersatileFFNOptions, checkVersatileSizes } from './versatile'
import type { FFNModule } from './block'

/** The FFN kinds a TransformerLM block can hold. */
export type FFNKind = 'versatile' | 'dense' | 'moe' | 'loops'
/** @internal every FFN setting of a model config */
export type FFNSettings = VersatileFFNOptions & { loops?: number }

/** @internal checks the sizes of a model config's FFN before anything is allocated */
export function checkFFNSizes(kind: FFNKind, I: number, o: { experts?: number; topK?: number; expertHidden?: number }): void {
  if (kind === 'versatile') checkVersatileSizes(I, o.experts ?? 8, o.topK ?? 2, o.expertHidden)
  if (kind === 'moe') checkMoESizes(I, o.experts ?? 8, o.topK ?? 2, o.expertHidden)
}

export function createFFN(kind: FFNKind, s: FFNSettings): FFNModule {
  // the modules' forward/backward records differ; the block treats them alike through FFNModule
  const common = { dModel: s.dModel, device: s.device, dtype: s.dtype, precision: s.precision, seed: s.seed, recompute: s.recompute }
  if (kind === 'dense') return new DenseFFN({ ...common, hidden: s.hidden }) as unknown as FFNModule
  if (kind === 'loops') return new LoopFFN({ ...common, hidden: s.hidden, loops: s.loops }) as unknown as FFNModule
  if (kind === 'moe') {
    // the model's hidden is the dense width the MoE matches in active parameters: E = floor(I/K) by default
    const E = checkMoESizes(s.hidden ?? 4 * s.dModel, s.experts ?? 8, s.topK ?? 2, s.expertHidden)
    return new MoEFFN({ ...common, experts: s.experts, topK: s.topK, expertHidden: E, balanceLossWeight: s.balanceLossWeight }) as unknown as FFNModule
  }
  const { loops: _unused, ...v } = s
  return new VersatileFFN(v) as unknown as FFNModule
}

/** @internal the FFN settings a model's config records, as the built FFN resolved them (undefined: not used by this kind) */
export function resolvedFFN(ffn: FFNModule): { expertHidden?: number; balanceLossWeight?: number; loops?: number } {
  const f = ffn as unknown
  if (f instanceof VersatileFFN || f instanceof MoEFFN) return { expertHidden: f.expertHidden, balanceLossWeight: f.balanceLossWeight, loops: undefined }
  if (f instanceof LoopFFN) return { expertHidden: undefined, balanceLossWeight: undefined, loops: f.loops }
  return { expertHidden: undefined, balanceLossWeight: undefined, loops: undefined }
}
