// Builds a block's FFN: the dense baseline or VersatileFFN, both from their own modules.
import { DenseFFN } from './ffn'
import { VersatileFFN, VersatileFFNOptions } from './versatile'
import type { FFNModule } from './block'

export function createFFN(kind: 'dense' | 'versatile', s: VersatileFFNOptions): FFNModule {
  // the two modules' forward/backward records differ; the block treats them alike through FFNModule
  if (kind === 'dense') return new DenseFFN({ dModel: s.dModel, hidden: s.hidden, device: s.device, dtype: s.dtype, seed: s.seed, recompute: s.recompute }) as unknown as FFNModule
  return new VersatileFFN(s) as unknown as FFNModule
}
