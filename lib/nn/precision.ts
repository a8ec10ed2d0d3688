// bf16 mixed precision: the float32 parameters are the master copy (the optimizer, checkpoints and
// gradients use them); the matrices the GEMMs read get a bfloat16 compute copy, which AdamW rewrites
// in the same pass that updates the master (see adamwStep's `copy`), so the two never disagree.
import { Tensor, empty } from '../tensor'
import { oneOf } from '../validate'

/** Training precision: 'float32' (default) or 'bf16-mixed' (float32 master weights, bfloat16 compute copies). */
export type Precision = 'float32' | 'bf16-mixed'

/** @internal the option check of `precision` */
export const PRECISION = oneOf(['float32', 'bf16-mixed'] as const)

// master parameter -> its bfloat16 compute copy
const copies = new WeakMap<Tensor, Tensor>()

/** @internal a bfloat16 copy of a float32 parameter, registered so that AdamW refreshes it with every update */
export function makeComputeCopy(param: Tensor): Tensor {
  const c = empty(param.shape, { device: param.device, dtype: 'bfloat16' })
  c.copy_(param)
  copies.set(param, c)
  return c
}

/** @internal the compute copy of a parameter, if it has one */
export function computeCopyOf(param: Tensor): Tensor | undefined {
  const c = copies.get(param)
  return c && !c.disposed ? c : undefined
}

/** @internal rewrites the compute copies of `params` from their masters (after a load) */
export function refreshComputeCopies(params: Iterable<Tensor>): void {
  for (const p of params) computeCopyOf(p)?.copy_(p)
}

/** @internal frees the compute copy of a parameter */
export function disposeComputeCopy(param: Tensor): void {
  copies.get(param)?.dispose()
  copies.delete(param)
}
