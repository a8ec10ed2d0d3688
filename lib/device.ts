import { native } from './binding'
import { fail, show } from './errors'

/** A Device or its name: 'cpu', 'cuda' (= 'cuda:0') or 'cuda:N'. */
export type DeviceLike = Device | string

/** A compute device: 'cpu' or 'cuda:N'. Each owns an ordered stream of work. */
export class Device {
  private constructor(
    readonly type: 'cpu' | 'cuda',
    readonly index: number,
  ) {}

  /** @internal native type code */
  get code(): number {
    return this.type === 'cpu' ? 0 : 1
  }

  /** The device's name: 'cpu' or 'cuda:N'. */
  toString(): string {
    return this.type === 'cpu' ? 'cpu' : `cuda:${this.index}`
  }

  /**
   * Resolves when every op queued on this device so far has run. An op's failure belongs to the
   * tensors it wrote (their `data()` rejects with it), not to the device, so `sync()` rejects only
   * when the device has failed for good (ERR_DEVICE: a CUDA error such as an illegal address
   * leaves the context unusable, and every later call says so).
   */
  sync(): Promise<void> {
    return native.sync(this.code, this.index)
  }

  /**
   * Bytes of device memory held by live tensors (`live`), kept by the allocator for reuse
   * (`cached`), and the most that were live at once since the last resetPeakMemory() or since
   * the device was first used (`peak`, >= live). On CPU a tensor holds its memory from its
   * creation, when an op is queued, until its last handle and queued reader are gone; on CUDA
   * from when the stream first runs an op on it, and `live` also counts the kernels' scratch
   * blocks. Read after `await device.sync()` for a figure that covers the work queued so far.
   */
  memory(): { live: number; cached: number; peak: number } {
    return native.memory(this.code, this.index)
  }

  /**
   * Starts a new peak: memory().peak becomes the bytes live now and then tracks the most live
   * at once from here. Measure a step's peak with `await dev.sync(); dev.resetPeakMemory()`,
   * the step, `await dev.sync()`, then `dev.memory().peak`.
   */
  resetPeakMemory(): void {
    native.memory(this.code, this.index, true)
  }

  private static cache = new Map<string, Device>()

  /** Parses 'cpu', 'cuda' (= 'cuda:0') or 'cuda:N'. Throws ERR_CUDA_UNAVAILABLE when CUDA cannot be used. */
  static get(d: DeviceLike | undefined, name = 'device'): Device {
    if (d === undefined) return Device.get('cpu')
    if (d instanceof Device) return d
    if (typeof d !== 'string') fail('ERR_DEVICE', `${name}: expected 'cpu' or 'cuda:N', got ${show(d)}`)
    const known = Device.cache.get(d)
    if (known) return known
    let dev: Device
    if (d === 'cpu') dev = new Device('cpu', 0)
    else {
      const m = /^cuda(?::(\d+))?$/.exec(d)
      if (!m) fail('ERR_DEVICE', `${name}: expected 'cpu' or 'cuda:N', got ${show(d)}`)
      const index = m[1] === undefined ? 0 : Number(m[1])
      const info = native.cudaInfo()
      if (!info.available) fail('ERR_CUDA_UNAVAILABLE', `${name}: CUDA is not available: ${info.reason}`)
      if (index >= info.count) fail('ERR_DEVICE', `${name}: expected cuda:0..cuda:${info.count - 1}, got ${show(d)}`)
      dev = new Device('cuda', index)
    }
    Device.cache.set(d, dev)
    return dev
  }
}

/** The Device for a name (default 'cpu'); ERR_DEVICE for an unknown name, ERR_CUDA_UNAVAILABLE without CUDA. */
export function device(d: DeviceLike = 'cpu'): Device {
  return Device.get(d)
}

/** CUDA availability. On a machine without a driver or GPU `available()` is false and `reason()` says why. */
export const cuda = {
  /** True when the CUDA library loaded and found a driver and at least one GPU. */
  available(): boolean {
    return native.cudaInfo().available
  },
  /** Why CUDA is unavailable (empty when it is available). */
  reason(): string {
    return native.cudaInfo().reason
  },
  /** Number of CUDA devices (0 without CUDA). */
  deviceCount(): number {
    return native.cudaInfo().count
  },
}

/** Threads used inside each CPU op (default: every core). Takes effect from the next op. */
export function setNumThreads(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 256)
    fail('ERR_ARGUMENT', `threads: expected an integer in [0, 256] (0 = every core), got ${show(n)}`)
  native.threads(n)
}

/**
 * How long, in microseconds, a CPU worker thread keeps polling for the next op after finishing
 * its part of one, before it sleeps (default 200; the environment variable `VFFN_SPIN_US` sets
 * the starting value). Decoding runs dozens of ops of a few microseconds each per token, and
 * waking a sleeping thread costs about as long as such an op, so polling keeps the threads
 * ready between them. 0 sleeps at once: for a machine shared with other busy processes, where
 * a polling thread would take a core another process wants. Takes effect from the next op.
 * Returns the value now in force; with no argument it only reads it.
 */
export function setSpinWait(microseconds?: number): number {
  if (microseconds !== undefined && (typeof microseconds !== 'number' || !Number.isInteger(microseconds) || microseconds < 0 || microseconds > 100000))
    fail('ERR_ARGUMENT', `microseconds: expected an integer in [0, 100000], got ${show(microseconds)}`)
  return native.spinWait(microseconds)
}

/** Threads each CPU op uses (see setNumThreads). */
export function getNumThreads(): number {
  return native.threads()
}
