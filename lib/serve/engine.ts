// GenerationEngine: serves many generation requests on one model with continuous batching.
// Each step runs every admitted request together (one token for decoding requests, a bounded
// chunk of prompt for prefilling ones) over a paged KV pool, samples on the device and hands each
// token to its request. Requests join and leave between steps.
import { VffnError, fail, show } from '../errors'
import { TransformerLM } from '../nn/model'
import { INT32, arrayOf, bool, check, checkOptions, custom, int, number, optional } from '../validate'
import { DecodeGraph } from './graph'
import { sampleRows } from './kernels'
import { KVPool } from './pool'
import { mulberry32 } from '../random'
import { GenerationRequest } from './request'
import { StepRow, runStep } from './step'

/** Options of a GenerationEngine. */
export interface EngineOptions {
  /** most requests admitted at once (decoding or prefilling). Default 32. */
  maxBatch?: number
  /** the KV budget in tokens, summed over admitted requests; the pool holds ceil(maxTokens / blockSize) blocks. Default min(maxBatch * maxSeqLen, 16384). */
  maxTokens?: number
  /** tokens per KV block. Default 16. */
  blockSize?: number
  /** most prompt tokens prefilled per step (summed over requests): bounds how long a new prompt delays running streams. Default 64. */
  prefillChunk?: number
  /**
   * most prompt tokens prefilled per step while no admitted request is decoding (no stream to
   * delay: a burst of new requests, an idle engine). Larger steps use the CPU better. Default
   * max(prefillChunk, 2048).
   */
  idlePrefillChunk?: number
  /**
   * record a decode step (every row one token) once per batch size and replay it with one native
   * call per step; false runs every step op by op. The results are the same bit for bit. Default true.
   */
  recordSteps?: boolean
  /**
   * on the CPU, queue the next decode step before this one's ids are read back, when nothing can
   * change the batch in between (no request reaches maxNewTokens, none waits for room, none was
   * aborted). A request that emits a stop token has then had one more token computed, which is
   * dropped; an abort takes effect one step later. The results are the same. Needs recordSteps.
   * Default true.
   */
  overlapSteps?: boolean
  /**
   * zero the KV pool once at construction (queued on the device; requests wait behind it), so its
   * memory is committed and touched up front. Fresh memory is mapped on first use, a page fault
   * per 4 KiB: on the 2-core test VMs 5–12 µs each, about 1.5 ms a token at the 354M shapes until
   * every block has been used once. Costs that time (about 0.3 s per GiB of pool there) at
   * construction instead. The results are the same. Default false.
   */
  prefault?: boolean
}

/** Options of one request. */
export interface RequestOptions {
  /** tokens to add. Default 16. */
  maxNewTokens?: number
  /** 0 (default) is greedy (ties: lowest id); > 0 samples from softmax(logits / temperature) */
  temperature?: number
  /** sample only among the k most likely ids (0 = all). Default 0. */
  topK?: number
  /** then only among the most likely ids whose probabilities sum to at least topP (1 = all). Default 1. */
  topP?: number
  /** seed of the request's own sampler, an integer in [0, 2^32 - 1]. Default 0. */
  seed?: number
  /** stop once one of these ids is emitted (the id is kept) */
  stopTokens?: readonly number[]
  /** aborting it stops the request at the next step, frees its cache and rejects it with ERR_ABORTED */
  signal?: AbortSignal
}

/** What an engine holds now. */
export interface EngineStats {
  /** admitted requests (prefilling or decoding) */
  running: number
  /** requests waiting for room, in arrival order */
  waiting: number
  blockSize: number
  /** KV blocks held by admitted requests */
  usedBlocks: number
  freeBlocks: number
  /** bytes of the KV pool (allocated once, at construction) */
  poolBytes: number
  /** decode steps run so far */
  steps: number
  /** of those, steps run by replaying a recorded step */
  replayedSteps: number
  /** recorded steps held (one per batch size seen lately, at most 8; none while the engine is idle) */
  recordedSteps: number
  /** of the replayed steps, those queued before the step ahead of them was read back (overlapSteps) */
  overlappedSteps: number
}

/** @internal u as the float32 params carry it: rounding may not reach 1 (sample needs u < 1) */
export function uniform32(u: number): number {
  const f = Math.fround(u)
  return f < 1 ? f : 1 - 2 ** -24
}

const ENGINE_OPTIONS = { maxBatch: optional(int(1, 65536)), maxTokens: optional(int(1, 2 ** 31 - 1)), blockSize: optional(int(1, 4096)), prefillChunk: optional(int(1, 1 << 20)), idlePrefillChunk: optional(int(1, 1 << 20)), recordSteps: optional(bool), overlapSteps: optional(bool), prefault: optional(bool) }
const SIGNAL = check<AbortSignal>('an AbortSignal', (v) => typeof AbortSignal !== 'undefined' && v instanceof AbortSignal)
const REQUEST_OPTIONS = {
  maxNewTokens: optional(int(0)), temperature: optional(number({ min: 0 })), topK: optional(int(0)),
  topP: optional(number({ exclusiveMin: 0, max: 1 })), seed: optional(int(0, 2 ** 32 - 1)), stopTokens: optional(arrayOf(INT32)), signal: optional(SIGNAL),
}
// recorded steps kept per engine: one per batch size seen lately (each holds a step's activations)
const MAX_GRAPHS = 8
const CLOSE_OPTIONS = { cancel: optional(bool) }
const PROMPT = custom<Int32Array>('a non-empty array of token ids or an Int32Array', (name, v) => {
  if (!Array.isArray(v) && !(v instanceof Int32Array)) fail('ERR_ARGUMENT', `${name}: expected an array of token ids or an Int32Array, got ${show(v)}`)
  if (v.length === 0) fail('ERR_SHAPE', `${name}: a prompt needs at least one token`)
  return Int32Array.from(v as ArrayLike<number>, (x, i) => int()(`${name}[${i}]`, x))
})

/**
 * Serves generation requests on one model: continuous batching over a paged KV pool, chunked
 * prefill, sampling on the device, streaming, cancellation.
 *
 * Admission: a request is admitted when fewer than maxBatch requests run and the pool has the
 * blocks for its whole prompt and maxNewTokens (reserved up front, so an admitted request never
 * waits or is evicted); otherwise it waits. Waiting requests are admitted strictly in arrival
 * order (FIFO: a small request never overtakes a large one ahead of it, so none starves).
 * A request larger than the whole budget is refused (ERR_ARGUMENT). A step that fails (out of
 * memory, ...) fails the admitted requests (their caches share the pool it spoiled); waiting ones
 * and the engine go on.
 */
export class GenerationEngine {
  readonly model: TransformerLM
  readonly maxBatch: number
  readonly maxTokens: number
  readonly blockSize: number
  readonly prefillChunk: number
  readonly idlePrefillChunk: number
  readonly recordSteps: boolean
  readonly overlapSteps: boolean
  readonly prefault: boolean
  private readonly pool: KVPool
  /** recorded decode steps by batch size, least recently used first */
  private readonly graphs = new Map<number, DecodeGraph>()
  private replayed = 0
  private overlapped = 0
  /** a decode step queued before the one ahead of it was read back: the next step to finish */
  private ahead?: Launched
  /** set when a decode step turned out not to be recordable */
  private unrecordable = false
  private readonly waiting: GenerationRequest[] = []
  private readonly running: GenerationRequest[] = []
  private looping = false
  private closed = false
  private steps = 0
  private idle: (() => void)[] = []

  constructor(model: TransformerLM, opts: EngineOptions = {}) {
    if (!(model instanceof TransformerLM)) fail('ERR_ARGUMENT', `model: expected a TransformerLM, got ${show(model)}`)
    const o = checkOptions('opts', opts, ENGINE_OPTIONS)
    this.model = model
    this.maxBatch = o.maxBatch ?? 32
    this.blockSize = o.blockSize ?? 16
    // a full maxSeqLen for every slot would be gigabytes at the paper's sizes
    this.maxTokens = o.maxTokens ?? Math.min(this.maxBatch * model.config.maxSeqLen, 16384)
    this.prefillChunk = o.prefillChunk ?? 64
    this.idlePrefillChunk = o.idlePrefillChunk ?? Math.max(this.prefillChunk, 2048)
    this.recordSteps = o.recordSteps ?? true
    this.overlapSteps = o.overlapSteps ?? true
    this.prefault = o.prefault ?? false
    this.pool = new KVPool(model.blocks.length, model.config.dModel, this.maxTokens, this.blockSize, model.device)
    if (this.prefault) this.pool.zero()
  }

  /**
   * Queues a request for `prompt` (token ids, any length up to maxSeqLen - maxNewTokens). Never
   * throws: a bad prompt or option, an aborted signal or a closed engine gives a request that has
   * already failed with a VffnError (ERR_ARGUMENT, ERR_SHAPE, ERR_ABORTED, ERR_CLOSED).
   */
  generate(prompt: readonly number[] | Int32Array, opts: RequestOptions = {}): GenerationRequest {
    const req = new GenerationRequest()
    try {
      const o = checkOptions('opts', opts, REQUEST_OPTIONS)
      const p = PROMPT('prompt', prompt)
      const { vocabSize: V, maxSeqLen } = this.model.config
      p.forEach((id, i) => {
        if (id >= V) fail('ERR_ARGUMENT', `prompt[${i}]: token id ${id} is outside the vocabulary [0, ${V})`)
      })
      const maxNew = o.maxNewTokens ?? 16
      if (p.length + maxNew > maxSeqLen) fail('ERR_SHAPE', `maxNewTokens: ${p.length} prompt tokens + ${maxNew} new exceed maxSeqLen ${maxSeqLen}`)
      // the last new token is never fed back, so it needs no cache
      const need = this.pool.blocksFor(p.length + Math.max(maxNew - 1, 0))
      if (need > this.pool.numBlocks)
        fail('ERR_ARGUMENT', `prompt: ${p.length} prompt tokens + ${maxNew} new need ${need} KV blocks of ${this.blockSize}, more than the whole budget (maxTokens ${this.maxTokens}: ${this.pool.numBlocks} blocks)`)
      if (o.signal?.aborted) fail('ERR_ABORTED', 'signal: the request was aborted before it started')
      if (this.closed) fail('ERR_CLOSED', 'generate: the engine is closed')
      req._plan = {
        prompt: p, maxNewTokens: maxNew, temperature: o.temperature ?? 0, topK: o.topK ?? 0, topP: o.topP ?? 1,
        stopTokens: new Set(o.stopTokens ?? []), rand: mulberry32(o.seed ?? 0),
      }
      if (maxNew === 0) {
        req._finish()
        return req
      }
      const signal = o.signal
      if (signal) {
        const onAbort = () => this.abort(req, new VffnError('ERR_ABORTED', 'signal: the request was aborted'))
        signal.addEventListener('abort', onAbort, { once: true })
        // a long-lived signal must not keep finished requests (and this engine) reachable
        req._onDone = () => signal.removeEventListener('abort', onAbort)
      }
    } catch (e) {
      req._finish(e instanceof VffnError ? e : new VffnError('ERR_INTERNAL', String(e)))
      return req
    }
    this.waiting.push(req)
    this.kick()
    return req
  }

  /** Requests, blocks and pool bytes now. */
  stats(): EngineStats {
    return {
      running: this.running.length, waiting: this.waiting.length, blockSize: this.blockSize,
      usedBlocks: this.pool.numBlocks - this.pool.freeBlocks, freeBlocks: this.pool.freeBlocks, poolBytes: this.pool.bytes, steps: this.steps,
      replayedSteps: this.replayed, recordedSteps: this.graphs.size, overlappedSteps: this.overlapped,
    }
  }

  /**
   * Refuses new requests, lets every queued and running one finish (or, with `cancel: true`,
   * rejects them with ERR_CLOSED at the next step), then frees the KV pool.
   */
  async close(opts: { cancel?: boolean } = {}): Promise<void> {
    const o = checkOptions('opts', opts, CLOSE_OPTIONS)
    this.closed = true
    if (o.cancel) {
      const err = new VffnError('ERR_CLOSED', 'close: the engine was closed with cancel: true')
      for (const r of [...this.waiting, ...this.running]) this.abort(r, err)
    }
    if (this.looping) await new Promise<void>((r) => this.idle.push(r))
    this.dropGraphs()
    this.pool.dispose()
  }

  private abort(req: GenerationRequest, err: VffnError): void {
    const w = this.waiting.indexOf(req)
    if (w >= 0) {
      this.waiting.splice(w, 1)
      req._finish(err)
    } else if (req._phase !== 'done') req._stop = err
  }

  private dropGraphs(): void {
    for (const g of this.graphs.values()) g.dispose()
    this.graphs.clear()
  }

  // the recorded step for B decoding rows: made on first use, again when the model's parameters
  // were swapped, and the least recently used one dropped beyond MAX_GRAPHS
  private graph(B: number): DecodeGraph {
    let g = this.graphs.get(B)
    this.graphs.delete(B)
    if (g && !g.matches(this.model)) {
      g.dispose()
      g = undefined
    }
    g ??= new DecodeGraph(this.model, this.pool, B)
    this.graphs.set(B, g)
    for (const [k, old] of this.graphs) {
      if (this.graphs.size <= MAX_GRAPHS) break
      old.dispose()
      this.graphs.delete(k)
    }
    return g
  }

  // the recording for B rows, or undefined to run this step op by op: a step that cannot be
  // recorded (an op that waits, say, in a module's forward) runs op by op from then on, and any
  // other failure to record is left to the op-by-op step to report as it would anyway
  private tryGraph(B: number): DecodeGraph | undefined {
    if (this.unrecordable) return undefined
    try {
      return this.graph(B)
    } catch (e) {
      if (e instanceof VffnError && e.code === 'ERR_ARGUMENT' && /cannot be part of a recorded step/.test(e.message)) this.unrecordable = true
      return undefined
    }
  }

  private kick(): void {
    if (this.looping) return
    this.looping = true
    // requests made in the same tick start in the same step
    setImmediate(() => void this.loop())
  }

  private release(req: GenerationRequest, err?: VffnError): void {
    this.pool.release(req._blocks)
    req._blocks = []
    this.running.splice(this.running.indexOf(req), 1)
    // idle now (nothing runs, waits or is in flight): the recordings go before anyone hears of it
    if (this.running.length === 0 && this.waiting.length === 0 && !this.ahead) this.dropGraphs()
    req._finish(err)
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.running.length < this.maxBatch) {
      const req = this.waiting[0]
      const plan = req._plan!
      const blocks = this.pool.alloc(this.pool.blocksFor(plan.prompt.length + plan.maxNewTokens - 1))
      if (!blocks) return
      this.waiting.shift()
      req._blocks = blocks
      req._phase = 'prefill'
      this.running.push(req)
    }
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        for (const r of [...this.running]) if (r._stop) this.release(r, r._stop)
        this.admit()
        if (this.running.length === 0 && !this.ahead) break
        await this.step()
      }
    } finally {
      // an idle engine holds its pool only: recorded steps are made again when requests come
      this.dropGraphs()
      this.looping = false
      for (const f of this.idle.splice(0)) f()
    }
  }

  private async step(): Promise<void> {
    if (this.ahead) {
      const next = this.ahead
      this.ahead = undefined
      return this.finishDecode(next)
    }
    const rows: StepRow[] = []
    const owners: GenerationRequest[] = []
    for (const r of this.running)
      if (r._phase === 'decode') {
        rows.push({ tokens: Int32Array.of(r.tokens[r.tokens.length - 1]), start: r._pos, blocks: r._blocks, sample: true })
        owners.push(r)
      }
    // the chunk bounds how long prompts delay running streams; with none running, a step takes more
    let budget = rows.length === 0 ? this.idlePrefillChunk : this.prefillChunk
    for (const r of this.running) {
      if (r._phase !== 'prefill' || budget === 0) continue
      const P = r._plan!.prompt.length
      const n = Math.min(budget, P - r._pos)
      rows.push({ tokens: r._plan!.prompt.subarray(r._pos, r._pos + n), start: r._pos, blocks: r._blocks, sample: r._pos + n === P })
      owners.push(r)
      budget -= n
    }
    const params = this.params(owners.filter((_, i) => rows[i].sample))
    let ids: Int32Array | undefined, logprobs: Float32Array | undefined
    this.steps++
    try {
      const g = this.recordSteps && rows.length > 0 && rows.every((r) => r.tokens.length === 1 && r.sample) ? this.tryGraph(rows.length) : undefined
      if (g) return await this.finishDecode({ g, rows, owners, done: g.run(rows, params, this.blockSize) })
      const logits = runStep(this.model, this.pool, rows)
      if (logits) {
        try {
          ;({ ids, logprobs } = await sampleRows(logits, params))
        } finally {
          logits.dispose()
        }
      }
    } catch (e) {
      return this.failStep(e)
    }
    this.deliver(rows, owners, ids, logprobs)
  }

  // each sampled row's [temperature, topK, topP, u], drawing each request's next uniform
  private params(sampled: readonly GenerationRequest[]): Float32Array {
    const params = new Float32Array(4 * sampled.length)
    sampled.forEach((r, i) => {
      const p = r._plan!
      params.set([p.temperature, p.topK, p.topP, uniform32(p.rand())], 4 * i)
    })
    return params
  }

  // whether the step after `cur` has its rows known before cur's ids are: the same requests, each
  // one position on, none of them finishing by count at cur, none aborted, nobody to admit
  private canFollow(cur: Launched): boolean {
    if (!this.overlapSteps || !cur.g.canFollow || this.running.length !== cur.owners.length) return false
    if (this.waiting.length > 0 && this.running.length < this.maxBatch) return false
    // (a request still running has not ended)
    return cur.owners.every((r, i) => this.running[i] === r && !r._stop && r.tokens.length + 2 <= r._plan!.maxNewTokens)
  }

  // a replayed decode step in flight: queue the following one when it can follow, then hand out
  // this one's tokens. A following step's rows are within their reserved blocks (a request gets
  // blocks for its prompt and maxNewTokens - 1 fed-back tokens); one whose request has ended by
  // then writes only into blocks it held, and any new owner of those writes after it in order.
  private async finishDecode(cur: Launched): Promise<void> {
    const B = cur.rows.length
    if (this.canFollow(cur)) {
      const rows = cur.rows.map((r) => ({ tokens: FED_BACK, start: r.start + 1, blocks: r.blocks, sample: true }))
      const params = this.params(cur.owners)
      this.steps++
      const done = cur.g.run(rows, params, this.blockSize, true)
      // handled when its turn comes (or dropped after a failure); not an unhandled rejection meanwhile
      done.catch(() => undefined)
      this.ahead = { g: cur.g, rows, owners: cur.owners, done, follows: true }
    }
    let res: { ids: Int32Array; logprobs: Float32Array }
    try {
      res = await cur.done
    } catch (e) {
      // the step queued after it read its ids: let it end before anything is made again
      const next = this.ahead
      this.ahead = undefined
      if (next) await next.done.catch(() => undefined)
      // a recording that failed once is made again from scratch
      if (this.graphs.get(B) === cur.g) {
        cur.g.dispose()
        this.graphs.delete(B)
      }
      return this.failStep(e)
    }
    this.replayed++
    if (cur.follows) this.overlapped++
    this.deliver(cur.rows, cur.owners, res.ids, res.logprobs)
  }

  // a failed write marks the whole pool: fail every admitted request, make the pool whole again
  private failStep(e: unknown): void {
    const err = e instanceof VffnError ? e : new VffnError('ERR_INTERNAL', String(e))
    for (const r of [...this.running]) this.release(r, err)
    this.pool.zero()
  }

  // a step's tokens to their requests; requests that ended meanwhile (a step queued ahead) get none
  private deliver(rows: readonly StepRow[], owners: readonly GenerationRequest[], ids?: Int32Array, logprobs?: Float32Array): void {
    let s = 0
    rows.forEach((row, i) => {
      const r = owners[i]
      if (r._phase === 'done') {
        if (row.sample) s++
        return
      }
      r._pos += row.tokens.length
      if (!row.sample) return
      const id = ids![s], lp = logprobs![s++]
      // an abort during the step drops its token: the request stops now
      if (r._stop) return
      r._phase = 'decode'
      r._push(id, lp)
      if (r.tokens.length >= r._plan!.maxNewTokens || r._plan!.stopTokens.has(id)) this.release(r)
    })
  }
}

/** a decode step queued on the device, with what its tokens belong to */
interface Launched {
  g: DecodeGraph
  rows: StepRow[]
  owners: GenerationRequest[]
  done: Promise<{ ids: Int32Array; logprobs: Float32Array }>
  /** queued before the step ahead of it was read back */
  follows?: boolean
}

// a following step's input ids are on the device already
const FED_BACK = Int32Array.of(0)
