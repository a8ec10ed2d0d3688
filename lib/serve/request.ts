// A request's side of the engine: its tokens as they arrive (async iteration), its result, and
// the per-request state the scheduler advances. Nothing here touches tensors.
import { VffnError } from '../errors'

/** @internal what the scheduler needs of a request, resolved from its options */
export interface RequestPlan {
  prompt: Int32Array
  maxNewTokens: number
  temperature: number
  topK: number
  topP: number
  stopTokens: ReadonlySet<number>
  rand: () => number
}

/**
 * One generation request: iterate it (`for await (const id of req)`) to receive each new token
 * as soon as it exists, or await `result` for all of them. A failed, aborted or refused request
 * rejects `result` and throws from the iteration with a VffnError; it never affects another.
 */
export class GenerationRequest implements AsyncIterable<number> {
  /** every new token (the prompt not included), once the request has finished */
  readonly result: Promise<Int32Array>
  /** the new tokens so far */
  readonly tokens: number[] = []
  /** log softmax(logits)[id] at temperature 1 of each new token, unfiltered */
  readonly logprobs: number[] = []
  /** @internal */
  _plan?: RequestPlan
  /** @internal blocks of the KV pool this request holds */
  _blocks: number[] = []
  /** @internal positions already in the cache */
  _pos = 0
  /** @internal 'waiting' (queued), 'prefill', 'decode', or finished */
  _phase: 'waiting' | 'prefill' | 'decode' | 'done' = 'waiting'
  /** @internal why the request must stop at the next step (abort or close) */
  _stop?: VffnError
  /** @internal run once when the request finishes (drops its abort listener) */
  _onDone?: () => void
  private error?: VffnError
  private wake: (() => void)[] = []
  private settle!: { resolve: (v: Int32Array) => void; reject: (e: unknown) => void }

  /** @internal created by GenerationEngine.generate */
  constructor() {
    this.result = new Promise<Int32Array>((resolve, reject) => {
      this.settle = { resolve, reject }
    })
    // a caller that only iterates must not see an unhandled rejection; awaiting result still rejects
    this.result.catch(() => undefined)
  }

  /** whether the request has finished (resolved or rejected) */
  get done(): boolean {
    return this._phase === 'done'
  }

  /** @internal a new token */
  _push(id: number, logprob: number): void {
    this.tokens.push(id)
    this.logprobs.push(logprob)
    this.notify()
  }

  /** @internal finishes with the tokens so far, or fails with `err` */
  _finish(err?: VffnError): void {
    if (this._phase === 'done') return
    this._phase = 'done'
    this.error = err
    this._onDone?.()
    this._onDone = undefined
    if (err) this.settle.reject(err)
    else this.settle.resolve(Int32Array.from(this.tokens))
    this.notify()
  }

  private notify(): void {
    const w = this.wake
    this.wake = []
    for (const f of w) f()
  }

  /** Yields each new token once it exists; throws the request's error if it fails. */
  async *[Symbol.asyncIterator](): AsyncGenerator<number, void, undefined> {
    for (let i = 0; ; ) {
      if (i < this.tokens.length) {
        yield this.tokens[i++]
        continue
      }
      if (this._phase === 'done') {
        if (this.error) throw this.error
        return
      }
      await new Promise<void>((r) => this.wake.push(r))
    }
  }
}
