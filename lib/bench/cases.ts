// The benchmark cases, built from the package's public modules and ops only.
import type { Device } from '../device'
import { DenseFFN } from '../nn/ffn'
import { LoopFFN } from '../nn/loop'
import { MoEFFN } from '../nn/moe'
import { VersatileFFN, VersatileStats } from '../nn/versatile'
import { Tensor, randn, tensor } from '../tensor'
import { AuthorsModel, authorsForward } from './authors'
import {
  CASE_HELP, CaseName, DepthMode, Shape, dtypeBytes, flopsAuthorsForward, flopsDenseForward, flopsDenseTrain,
  flopsLoopsForward, flopsLoopsTrain, flopsMoEForward, flopsMoETrain, flopsVersatileForward, flopsVersatileTrain, moeExpertHidden,
} from './config'
import { depthHeadWeight, encodeLoops, forcedLoops } from './depth'

export interface CaseContext {
  device: Device
  /** weight dtype; activations and gradients are float32 */
  dtype: 'float32' | 'bfloat16'
  shape: Shape
  tokens: number
  depth: DepthMode
  seed: number
}

export interface CaseMeasure {
  flops: number
  usefulFlops: number
  loopsHistogram?: number[]
  widthTokens?: number
  maxAbsDiffToVersatile?: number
}

// Memory: ops allocate their outputs when queued and free inputs when they have run, and JS queues a
// whole step long before the device finishes it; so the memory run keeps every tensor of the step
// (backward with retain) until the probe has sampled, which makes the measured peak independent of
// how far the device got meanwhile.
export interface BenchCase {
  name: CaseName
  kind: 'forward' | 'train'
  description: string
  paramBytes: number
  /**
   * Runs once and waits for the device; `keep` keeps what measure() reads; `probe` is called once
   * everything is queued (all outputs and saved tensors allocated), to sample memory.
   */
  run(keep?: boolean, probe?: () => void): Promise<void>
  /** FLOPs and stats of the last kept run. */
  measure(): Promise<CaseMeasure>
  dispose(): void
}

function paramBytes(m: DenseFFN | VersatileFFN | MoEFFN | LoopFFN, dtype: string, withGrads: boolean): number {
  let b = 0
  for (const [, p] of m.namedParameters()) b += p.size * (dtypeBytes(dtype) + (withGrads ? 4 : 0))
  return b
}

/** The batch: float32 [T, D] normal values; with a forced depth mode, the loop choice encoded as depth.ts explains. */
async function makeInput(ctx: CaseContext, salt: number): Promise<Tensor> {
  const { tokens: T, shape: s } = ctx
  const x = randn([T, s.dModel], { seed: ctx.seed * 1000 + salt })
  const loops = forcedLoops(ctx.depth, T, s.maxDepth, ctx.seed)
  if (!loops && ctx.device.type === 'cpu') return x
  const host = await x.data()
  x.dispose()
  if (loops) encodeLoops(host, s.dModel, loops)
  return tensor(host, [T, s.dModel], { device: ctx.device })
}

/** A VersatileFFN whose loop head, under a forced mode, is the crafted one of depth.ts (loaded like any checkpoint). */
function makeVersatile(ctx: CaseContext): VersatileFFN {
  const s = ctx.shape
  const vf = new VersatileFFN({ ...s, device: ctx.device, dtype: ctx.dtype, seed: ctx.seed })
  if (ctx.depth.kind !== 'random-init')
    vf.loadStateDict({ ...vf.stateDict(), 'depth_predictor.weight': depthHeadWeight(s.maxDepth, s.dModel) })
  return vf
}

function histogram(loops: Int32Array, L: number): number[] {
  const h = new Array<number>(L).fill(0)
  for (const c of loops) h[c - 1]++
  return h
}

function disposeAll(...ts: ({ dispose(): void } | undefined)[]): void {
  for (const t of ts) t?.dispose()
}

function denseCase(name: 'dense.forward' | 'dense.train', ctx: CaseContext, x: Tensor, dy: Tensor): BenchCase {
  const s = ctx.shape
  const ffn = new DenseFFN({ dModel: s.dModel, hidden: s.hidden, device: ctx.device, dtype: ctx.dtype, seed: ctx.seed })
  const train = name === 'dense.train'
  return {
    name, kind: train ? 'train' : 'forward', description: CASE_HELP[name], paramBytes: paramBytes(ffn, ctx.dtype, train),
    async run(keep = false, probe?: () => void) {
      if (!train) {
        const { y } = ffn.forward(x)
        probe?.()
        await ctx.device.sync()
        y.dispose()
        return
      }
      const tr = ffn.forward(x, { train: true })
      const dx = ffn.backward(tr, dy, { retain: keep })
      probe?.()
      await ctx.device.sync()
      disposeAll(dx, tr.y, keep ? tr : undefined)
    },
    async measure() {
      const f = train ? flopsDenseTrain(s, ctx.tokens) : flopsDenseForward(s, ctx.tokens)
      return { flops: f, usefulFlops: f }
    },
    dispose: () => disposeAll(x, dy, ffn),
  }
}

// The k-loop baseline (the paper's comparison): LoopFFN, the dense FFN applied L times with the same
// weights, so every token runs L loops; no depth head involved.
function loopsCase(name: 'loops.forward' | 'loops.train', ctx: CaseContext, x: Tensor, dy: Tensor): BenchCase {
  const s = ctx.shape
  const ffn = new LoopFFN({ dModel: s.dModel, hidden: s.hidden, loops: s.maxDepth, device: ctx.device, dtype: ctx.dtype, seed: ctx.seed })
  const train = name === 'loops.train'
  return {
    name, kind: train ? 'train' : 'forward', description: CASE_HELP[name], paramBytes: paramBytes(ffn, ctx.dtype, train),
    async run(keep = false, probe?: () => void) {
      if (!train) {
        const { y } = ffn.forward(x)
        probe?.()
        await ctx.device.sync()
        y.dispose()
        return
      }
      const tr = ffn.forward(x, { train: true })
      const dx = ffn.backward(tr, dy, { retain: keep })
      probe?.()
      await ctx.device.sync()
      disposeAll(dx, tr.y, keep ? tr : undefined)
    },
    async measure() {
      const f = train ? flopsLoopsTrain(s, ctx.tokens) : flopsLoopsForward(s, ctx.tokens)
      return { flops: f, usefulFlops: f }
    },
    dispose: () => disposeAll(x, dy, ffn),
  }
}

// The mixture-of-experts baseline at equal active parameters (the paper's MoE comparison): N separate
// experts of width floor(I/K), K per token, VersatileFFN's router and balance loss.
function moeCase(name: 'moe.forward' | 'moe.train', ctx: CaseContext, x: Tensor, dy: Tensor): BenchCase {
  const s = ctx.shape
  const ffn = new MoEFFN({ dModel: s.dModel, experts: s.experts, topK: s.topK, expertHidden: moeExpertHidden(s), device: ctx.device, dtype: ctx.dtype, seed: ctx.seed })
  const train = name === 'moe.train'
  return {
    name, kind: train ? 'train' : 'forward', description: CASE_HELP[name], paramBytes: paramBytes(ffn, ctx.dtype, train),
    async run(keep = false, probe?: () => void) {
      if (!train) {
        const out = ffn.forward(x)
        probe?.()
        await ctx.device.sync()
        disposeAll(out.y, out.stats)
        return
      }
      const tr = ffn.forward(x, { train: true })
      const dx = ffn.backward(tr, dy, { retain: keep })
      probe?.()
      await ctx.device.sync()
      disposeAll(dx, tr.y, tr.stats, tr.auxLoss, keep ? tr : undefined)
    },
    async measure() {
      const f = train ? flopsMoETrain(s, ctx.tokens) : flopsMoEForward(s, ctx.tokens)
      return { flops: f, usefulFlops: f, widthTokens: ctx.tokens }
    },
    dispose: () => disposeAll(x, dy, ffn),
  }
}

function versatileCase(name: 'versatile.forward' | 'versatile.train', ctx: CaseContext, x: Tensor, dy: Tensor): BenchCase {
  const s = ctx.shape
  const vf = makeVersatile(ctx)
  const train = name === 'versatile.train'
  let kept: VersatileStats | undefined
  return {
    name, kind: train ? 'train' : 'forward', description: CASE_HELP[name], paramBytes: paramBytes(vf, ctx.dtype, train),
    async run(keep = false, probe?: () => void) {
      let stats: VersatileStats
      if (!train) {
        const out = vf.forward(x)
        stats = out.stats
        probe?.()
        await ctx.device.sync()
        out.y.dispose()
      } else {
        // a fixed noise seed: every run draws the same Gumbel noise, so runs do the same work
        const tr = vf.forward(x, { train: true, step: 0, noise: 'gumbel', seed: ctx.seed })
        stats = tr.stats
        const dx = vf.backward(tr, dy, { retain: keep })
        probe?.()
        await ctx.device.sync()
        disposeAll(dx, tr.y, tr.auxLoss, keep ? tr : undefined)
      }
      if (keep) {
        kept?.dispose()
        kept = stats
      } else stats.dispose()
    },
    async measure() {
      if (!kept) throw new Error(`${name}: measure() before a kept run`)
      const loops = await kept.loops.intData()
      const lambda = await kept.lambda.data()
      const f = train ? flopsVersatileTrain(s, loops) : flopsVersatileForward(s, loops, lambda)
      return {
        flops: f,
        usefulFlops: f,
        loopsHistogram: histogram(loops, s.maxDepth),
        widthTokens: train ? loops.length : lambda.filter((l) => l > 0).length,
      }
    },
    dispose: () => disposeAll(x, dy, kept, vf),
  }
}

function authorsCase(ctx: CaseContext, x: Tensor): BenchCase {
  const s = ctx.shape
  const vf = makeVersatile(ctx)
  const model = new AuthorsModel(vf)
  let last: { y: Tensor; deepest: number } | undefined
  return {
    name: 'authors.forward', kind: 'forward', description: CASE_HELP['authors.forward'],
    // the model's parameters; the rebuild's dense and per-expert copies are an artefact of composing modules
    paramBytes: paramBytes(vf, ctx.dtype, false),
    async run(keep = false, probe?: () => void) {
      const r = await authorsForward(model, x, probe)
      if (keep) {
        last?.y.dispose()
        last = r
      } else r.y.dispose()
    },
    async measure() {
      if (!last) throw new Error('authors.forward: measure() before a kept run')
      // the same weights through VersatileFFN: both must give the same y
      const ref = vf.forward(x)
      const [a, b, loops, lambda] = [await last.y.data(), await ref.y.data(), await ref.stats.loops.intData(), await ref.stats.lambda.data()]
      disposeAll(ref.y, ref.stats)
      let diff = 0
      for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]))
      return {
        flops: flopsAuthorsForward(s, ctx.tokens, last.deepest),
        usefulFlops: flopsVersatileForward(s, loops, lambda),
        loopsHistogram: Array.from({ length: s.maxDepth }, (_, j) => (j + 1 === last!.deepest ? ctx.tokens : 0)),
        widthTokens: ctx.tokens,
        maxAbsDiffToVersatile: diff,
      }
    },
    dispose: () => {
      disposeAll(x, last?.y)
      model.dispose()
      vf.dispose()
    },
  }
}

/** Builds a case with its own module and inputs (made untimed). */
export async function makeCase(name: CaseName, ctx: CaseContext): Promise<BenchCase> {
  const x = await makeInput(ctx, 1)
  const dy = randn([ctx.tokens, ctx.shape.dModel], { seed: ctx.seed * 1000 + 2, device: ctx.device })
  switch (name) {
    case 'dense.forward':
    case 'dense.train':
      return denseCase(name, ctx, x, dy)
    case 'loops.forward':
    case 'loops.train':
      return loopsCase(name, ctx, x, dy)
    case 'versatile.forward':
    case 'versatile.train':
      return versatileCase(name, ctx, x, dy)
    case 'moe.forward':
    case 'moe.train':
      return moeCase(name, ctx, x, dy)
    case 'authors.forward':
      dy.dispose()
      return authorsCase(ctx, x)
  }
}
