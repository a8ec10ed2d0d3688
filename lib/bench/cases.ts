import type { Device } from '../device'
import type { CaseName, DepthMode, Shape } from './config'
export interface CaseContext { device: Device; dtype: 'float32' | 'bfloat16'; shape: Shape; tokens: number; depth: DepthMode; seed: number }
export interface CaseMeasure { flops: number; usefulFlops: number; loopsHistogram?: number[]; widthTokens?: number; maxAbsDiffToVersatile?: number }
export interface BenchCase { name: CaseName; kind: 'forward' | 'train'; description: string; paramBytes: number; run(keep?: boolean): Promise<void>; measure(): Promise<CaseMeasure>; dispose(): void }
export async function makeCase(name: CaseName, ctx: CaseContext): Promise<BenchCase> { throw new Error('todo ' + name + ctx.tokens) }
