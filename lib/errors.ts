/** Stable error codes; `err.code` is one of these. */
export type ErrorCode =
  | 'ERR_SHAPE'
  | 'ERR_DTYPE'
  | 'ERR_DEVICE'
  | 'ERR_CUDA_UNAVAILABLE'
  | 'ERR_DISPOSED'
  | 'ERR_OOM'
  | 'ERR_ARGUMENT'
  | 'ERR_UNSUPPORTED'
  | 'ERR_CUDA'
  | 'ERR_INTERNAL'
  /** a generation request stopped by its AbortSignal */
  | 'ERR_ABORTED'
  /** a generation request refused or stopped because its engine was closed */
  | 'ERR_CLOSED'

/** Every error the library throws: an Error with a stable `code`. */
export class VffnError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string) {
    super(message)
    this.code = code
    this.name = 'VffnError'
  }
}

export function fail(code: ErrorCode, message: string): never {
  throw new VffnError(code, message)
}

/** Shows a value in an error message. */
export function show(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`
  if (typeof v === 'string') return JSON.stringify(v)
  if (v === null || v === undefined) return String(v)
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object'
  return String(v)
}

export function checkInt(name: string, v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    fail('ERR_ARGUMENT', `${name}: expected an integer in [${min}, ${max}], got ${show(v)}`)
  return v
}

export function checkNumber(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail('ERR_ARGUMENT', `${name}: expected a finite number, got ${show(v)}`)
  return v
}

export function checkBool(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') fail('ERR_ARGUMENT', `${name}: expected a boolean, got ${show(v)}`)
  return v
}
