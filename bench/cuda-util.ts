// shared by the CUDA benchmarks: the no-GPU exit, batched timing on the device's stream, and the
// PyTorch yardstick (bench/torch_cuda.py) on the same GPU when python3 with torch is there.
import { spawnSync } from 'node:child_process'
import * as path from 'node:path'
import { cuda, device } from '../lib/index'

/** Exits 0 with a clear message when this machine has no usable GPU. */
export function requireGpu(name: string): void {
  if (cuda.available()) return
  console.log(`${name}: skipped, no GPU here (${cuda.reason()}). This benchmark only runs on a CUDA device.`)
  process.exit(0)
}

export function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def
}

/**
 * Median ms per call of `fn`: each sample enqueues `batch` calls and waits once, so the promise
 * round trip of a wait (tens of µs) is spread over the batch; 3 warm-up calls first.
 */
export async function timeMs(fn: () => void, samples = 7, batch = 10): Promise<number> {
  const dev = device('cuda')
  for (let i = 0; i < 3; i++) fn()
  await dev.sync()
  const ts: number[] = []
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now()
    for (let i = 0; i < batch; i++) fn()
    await dev.sync()
    ts.push((performance.now() - t0) / batch)
  }
  return ts.sort((a, b) => a - b)[Math.floor(ts.length / 2)]
}

export interface TorchResult {
  gpu?: string
  torch?: string
  rows?: Record<string, number | string>[]
  error?: string
}

/** Runs bench/torch_cuda.py; an error entry (never a throw) when python or torch is missing. */
export function torchYardstick(args: string[]): TorchResult {
  const script = path.join(__dirname, 'torch_cuda.py')
  const r = spawnSync(process.env.PYTHON ?? 'python3', [script, ...args], { encoding: 'utf8', timeout: 600_000 })
  if (r.status !== 0) return { error: `torch yardstick failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}` }
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as TorchResult
  } catch {
    return { error: 'torch yardstick printed no JSON' }
  }
}
