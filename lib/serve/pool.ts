// The paged KV pool: per layer one kPool and one vPool of [numBlocks, blockSize, D] float32, and
// a free list of block numbers. A sequence owns a list of blocks (its block table); its token j
// lives at flat slot table[floor(j / blockSize)] * blockSize + j % blockSize of every layer's pool.
import type { Device } from '../device'
import { fail } from '../errors'
import { Tensor, empty } from '../tensor'

/** @internal one layer's keys and values */
export interface LayerPool {
  k: Tensor
  v: Tensor
}

/** @internal blocks of KV cache shared by every sequence of one engine */
export class KVPool {
  readonly blockSize: number
  readonly numBlocks: number
  readonly layers: LayerPool[]
  private readonly free: number[]

  constructor(nLayers: number, dModel: number, maxTokens: number, blockSize: number, device: Device) {
    this.blockSize = blockSize
    this.numBlocks = Math.ceil(maxTokens / blockSize)
    const shape = [this.numBlocks, blockSize, dModel]
    this.layers = []
    try {
      for (let i = 0; i < nLayers; i++) this.layers.push({ k: empty(shape, { device }), v: empty(shape, { device }) })
    } catch (e) {
      this.dispose()
      throw e
    }
    // popped from the end: low block numbers first, so a fresh engine fills its pool in order
    this.free = Array.from({ length: this.numBlocks }, (_, i) => this.numBlocks - 1 - i)
  }

  /** blocks that `tokens` positions need */
  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize)
  }

  get freeBlocks(): number {
    return this.free.length
  }

  /** n blocks, or undefined (nothing taken) when fewer are free */
  alloc(n: number): number[] | undefined {
    if (n > this.free.length) return undefined
    return this.free.splice(this.free.length - n, n).reverse()
  }

  release(blocks: readonly number[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      if (blocks[i] < 0 || blocks[i] >= this.numBlocks) fail('ERR_INTERNAL', `KV pool: block ${blocks[i]} is not in the pool`)
      this.free.push(blocks[i])
    }
  }

  /** zeroes every layer's keys and values (queued) */
  zero(): void {
    for (const l of this.layers) {
      l.k.fill_(0)
      l.v.fill_(0)
    }
  }

  /** bytes of every layer's keys and values */
  get bytes(): number {
    return this.layers.reduce((s, l) => s + 2 * l.k.size * 4, 0)
  }

  dispose(): void {
    for (const l of this.layers) {
      l.k.dispose()
      l.v.dispose()
    }
    this.layers.length = 0
  }
}
