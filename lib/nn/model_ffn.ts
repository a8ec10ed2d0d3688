// Builds a block's FFN: the dense baseline or VersatileFFN, both from their own modules.
import { DeviceLike } from '../device'
import { DenseFFN } from './ffn'
import { VersatileFFN } from './versatile'
import type { FFNModule } from './block'

export interface FFNSpec {
  dModel: number
  hidden: number
  experts: number
  topK: number
  maxDepth: number
  expertHidden?: number
  balanceLossWeight?: number
  device: DeviceLike
  dtype: 'float32' | 'bfloat16'
  seed: number
}

export function createFFN(kind: 'dense' | 'versatile', s: FFNSpec): FFNModule {
  if (kind === 'dense') return new DenseFFN({ dModel: s.dModel, hidden: s.hidden, device: s.device, dtype: s.dtype, seed: s.seed }) as unknown as FFNModule
  return new VersatileFFN({
    dModel: s.dModel, hidden: s.hidden, experts: s.experts, topK: s.topK, maxDepth: s.maxDepth,
    expertHidden: s.expertHidden, balanceLossWeight: s.balanceLossWeight, device: s.device, dtype: s.dtype, seed: s.seed,
  }) as unknown as FFNModule
}
