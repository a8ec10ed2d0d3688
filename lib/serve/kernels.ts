// Sampling on the device as the engine calls it: per-row parameters from the host, and only the
// chosen ids and their log-probabilities read back (both reads in flight at once).
import { sample } from '../serve_ops'
import { Tensor, tensor } from '../tensor'

/** Samples one id per row of logits [B, V]; params [B*4] = (temperature, topK, topP, u) per row. */
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
    const [ids, logprobs] = await Promise.all([r.ids.intData(), r.logprobs.floatData()])
    return { ids, logprobs }
  } finally {
    r.ids.dispose()
    r.logprobs.dispose()
  }
}
