// A decode step recorded once and replayed with one native call. For B one-token rows the ops of
// a step (stepOps, then sampling on the CPU) are the same every step; only the index values change.
// So the step's index tensors live in one int32 buffer, rewritten by one write per step, and the
// ops are recorded over them (native/napi/graph.cpp). A replay runs exactly the recorded ops with
// their own error plans, so its results are those of the op-by-op step, bit for bit.
// Per step: one replay (which first writes the indices and sampling params), read ids, read logprobs.
// On the CPU the recording ends by copying the sampled ids into its own token input, so the next
// step can be queued before this one's ids are read (`run(..., follow = true)`): its tokens are
// already in place, and only the positions and parameters are written.
import type { NativeGraph } from '../../binding'
import { native } from '../binding'
import { fail } from '../errors'
import type { TransformerLM } from '../nn/model'
import { SampleResult, sample } from '../serve_ops'
import { Tensor, empty } from '../tensor'
import { sampleRows } from './kernels'
import type { KVPool } from './pool'
import { StepInputs, StepRow, slotOf, stepOps } from './step'

/** @internal B decoding rows, recorded over fixed index buffers */
export class DecodeGraph {
  readonly B: number
  /** columns of the block table: the most blocks one sequence can hold */
  readonly width: number
  private readonly model: TransformerLM
  /** the weights the recording read (bf16-mixed: the compute copies), in model.parameters() order: a model that swaps one needs a new recording */
  private readonly deps: readonly Tensor[]
  /** [ids B | slots B | starts B | lens B | picks B | table B * width] */
  private readonly host: Int32Array
  private readonly ints: Tensor<'int32'>
  /** ints without the ids: what a following step writes */
  private readonly rest: Tensor<'int32'>
  private readonly views: Tensor[]
  /** [B, 4] sampling parameters (CPU: sampling is part of the recording) */
  private readonly params?: Tensor
  private out?: SampleResult
  private logits?: Tensor
  private g?: NativeGraph

  constructor(model: TransformerLM, pool: KVPool, B: number) {
    this.model = model
    this.B = B
    this.width = Math.min(pool.numBlocks, pool.blocksFor(model.config.maxSeqLen))
    this.deps = [...model._computeWeights().values()]
    const W = this.width
    this.host = new Int32Array(5 * B + B * W)
    const device = model.device
    this.ints = empty([this.host.length], { dtype: 'int32', device })
    const part = (i: number) => this.ints.rows(i * B, (i + 1) * B)
    const flat = this.ints.rows(5 * B)
    const table = flat.reshape([B, W])
    flat.dispose()
    const inp: StepInputs = { tok: part(0), slots: part(1), groups: [{ starts: part(2), lens: part(3), table }], picks: part(4) }
    this.rest = this.ints.rows(B)
    this.views = [inp.tok, inp.slots, inp.groups[0].starts, inp.groups[0].lens, table, inp.picks!, this.rest]
    try {
      if (device.type === 'cpu') this.params = empty([B, 4], { device })
      const gs = [{ at: 0, B, S: 1 }]
      this.g = native.graphRecord(() => {
        const logits = stepOps(model, pool, gs, B, inp)!
        if (!this.params) {
          this.logits = logits
          return
        }
        try {
          this.out = sample(logits, this.params)
        } finally {
          logits.dispose()
        }
        // the next step's input ids, should it be queued before these are read
        inp.tok.copy_(this.out.ids)
      })
    } catch (e) {
      this.dispose()
      throw e
    }
  }

  /** whether the recording still reads the model's parameters (not swapped for other tensors) */
  matches(model: TransformerLM): boolean {
    if (model !== this.model || !this.g) return false
    let i = 0
    for (const p of model._computeWeights().values()) if (p !== this.deps[i++]) return false
    return i === this.deps.length
  }

  /** ops and storages of the recording */
  info(): { ops: number; owned: number; packedBytes: number } {
    return native.graphInfo(this.g!)
  }

  /** whether a step can follow the last one on the device (run with follow = true) */
  get canFollow(): boolean {
    return this.out !== undefined
  }

  /**
   * One decode step of these rows (each row one token, sampled); params [B * 4] as sampleRows
   * takes. Queues the step and its reads before it returns (a bad state rejects). follow: the
   * rows' tokens are the ids the last replay of this recording sampled, row for row (the ids
   * written from `rows` are then not sent).
   */
  async run(rows: readonly StepRow[], params: Float32Array, blockSize: number, follow = false): Promise<{ ids: Int32Array; logprobs: Float32Array }> {
    const { B, width: W, host } = this
    if (follow && !this.out) fail('ERR_INTERNAL', 'DecodeGraph: only a step sampled inside the recording can be followed')
    host.fill(0, 5 * B)
    for (let b = 0; b < B; b++) {
      const r = rows[b]
      host[b] = r.tokens[0]
      host[B + b] = slotOf(r.blocks, r.start, blockSize)
      host[2 * B + b] = r.start
      host[3 * B + b] = r.start + 1
      host[4 * B + b] = b
      host.set(r.blocks, 5 * B + b * W)
    }
    if (!this.out) {
      native.graphReplay(this.g!, [this.ints._id], [host])
      return sampleRows(this.logits!, params)
    }
    if (follow) native.graphReplay(this.g!, [this.rest._id, this.params!._id], [host.subarray(B), params])
    else native.graphReplay(this.g!, [this.ints._id, this.params!._id], [host, params])
    // queued now, so a step queued after this call cannot overwrite them first
    const reads = Promise.all([this.out.ids.intData(), this.out.logprobs.floatData()])
    return reads.then(([ids, logprobs]) => ({ ids, logprobs }))
  }

  dispose(): void {
    if (this.g) native.graphRelease(this.g)
    this.g = undefined
    for (const t of [...this.views, this.ints, this.params, this.logits, this.out?.ids, this.out?.logprobs]) t?.dispose()
  }
}
