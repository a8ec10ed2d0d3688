// One validation layer for every public entry point: small checks that compose into schemas, so
// an argument or option key gets the same precise VffnError (code, name, expected, got) everywhere.
// Nothing here allocates or queues work, so a failed check changes nothing.
import { Device, DeviceLike } from './device'
import { ErrorCode, fail, show } from './errors'

/** Validates `v` as the argument or option `name` and returns it typed; throws VffnError otherwise. */
export interface Check<T> {
  (name: string, v: unknown): T
  /** what the check accepts, as an error message says it ("an integer in [1, 8]") */
  readonly expected: string
}

/** A check from its description and a test; a failed test throws `code` with name, expected and got. */
export function check<T>(expected: string, test: (v: unknown) => boolean, code: ErrorCode = 'ERR_ARGUMENT'): Check<T> {
  return custom<T>(expected, (name, v) => {
    if (!test(v)) fail(code, `${name}: expected ${expected}, got ${show(v)}`)
    return v as T
  })
}

/** A check with its own logic (for messages that need more than name, expected and got). */
export function custom<T>(expected: string, fn: (name: string, v: unknown) => T): Check<T> {
  return Object.assign((name: string, v: unknown) => fn(name, v), { expected })
}

/** An integer in [min, max] (both inclusive). */
export function int(min = 0, max = Number.MAX_SAFE_INTEGER): Check<number> {
  return check(`an integer in [${min}, ${max}]`, (v) => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max)
}

/** An int32 value: an integer in [-2^31, 2^31 - 1]. */
export const INT32 = int(-(2 ** 31), 2 ** 31 - 1)

export interface NumberRule {
  /** reject NaN and ±Infinity. Default true. */
  finite?: boolean
  min?: number
  max?: number
  exclusiveMin?: number
  exclusiveMax?: number
}

/** A number, finite unless `finite: false` (NaN is never accepted), within the bounds given. */
export function number(r: NumberRule = {}): Check<number> {
  const finite = r.finite ?? true
  const parts = [
    r.min !== undefined ? `>= ${r.min}` : '', r.exclusiveMin !== undefined ? `> ${r.exclusiveMin}` : '',
    r.max !== undefined ? `<= ${r.max}` : '', r.exclusiveMax !== undefined ? `< ${r.exclusiveMax}` : '',
  ].filter(Boolean)
  const expected = `a${finite ? ' finite' : ''} number${parts.length ? ' ' + parts.join(' and ') : ''}`
  return check(expected, (v) =>
    typeof v === 'number' && !Number.isNaN(v) && (!finite || Number.isFinite(v)) &&
    (r.min === undefined || v >= r.min) && (r.max === undefined || v <= r.max) &&
    (r.exclusiveMin === undefined || v > r.exclusiveMin) && (r.exclusiveMax === undefined || v < r.exclusiveMax))
}

export const bool: Check<boolean> = check('a boolean', (v) => typeof v === 'boolean')
export const string: Check<string> = check('a string', (v) => typeof v === 'string')
export const func: Check<(...a: never[]) => unknown> = check('a function', (v) => typeof v === 'function')

/** One of the listed strings; a near miss is named ("did you mean 'gumbel'?"). */
export function oneOf<T extends string>(values: readonly T[], code: ErrorCode = 'ERR_ARGUMENT'): Check<T> {
  const expected = values.map((x) => `'${x}'`).join(' or ')
  return custom<T>(expected, (name, v) => {
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T
    const hint = typeof v === 'string' ? `; did you mean '${nearest(v, values)}'?` : ''
    return fail(code, `${name}: expected ${expected}, got ${show(v)}${hint}`)
  })
}

/** A weight or tensor dtype among `allowed`; ERR_DTYPE otherwise. */
export function dtype<T extends string>(allowed: readonly T[]): Check<T> {
  return oneOf(allowed, 'ERR_DTYPE')
}

/** 'cpu', 'cuda', 'cuda:N' or a Device; ERR_DEVICE (or ERR_CUDA_UNAVAILABLE) otherwise. */
export const device: Check<Device> = custom("'cpu', 'cuda:N' or a Device", (name, v) => Device.get(v as DeviceLike, name))

/** A 64-bit seed: a non-negative safe integer or a bigint in [0, 2^64); returned as a bigint. */
export const seed64: Check<bigint> = custom('a non-negative safe integer or a bigint in [0, 2^64)', (name, v) => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v)
  if (typeof v === 'bigint' && v >= 0n && v < 1n << 64n) return v
  return fail('ERR_ARGUMENT', `${name}: expected a non-negative safe integer or a bigint in [0, 2^64), got ${typeof v === 'bigint' ? v : show(v)}`)
})

/** A plain object whose values are all strings (checkpoint metadata). */
export const stringRecord: Check<Record<string, string>> = custom('an object of strings', (name, v) => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('ERR_ARGUMENT', `${name}: expected an object of strings, got ${show(v)}`)
  for (const [k, x] of Object.entries(v)) string(`${name}.${k}`, x)
  return v as Record<string, string>
})

/** An instance of `cls`. */
export function instance<T>(cls: abstract new (...a: never[]) => T, label = `a ${cls.name}`): Check<T> {
  return check(label, (v) => v instanceof cls)
}

/** `undefined` (meaning "the default") or what `c` accepts. */
export function optional<T>(c: Check<T>): Check<T | undefined> {
  return custom(`${c.expected} or undefined`, (name, v) => (v === undefined ? undefined : c(name, v)))
}

/** An array whose entries pass `c` (named name[i]), of length in [min, max]. */
export function arrayOf<T>(c: Check<T>, min = 0, max = Number.MAX_SAFE_INTEGER): Check<T[]> {
  const expected = `an array of ${min}..${max === Number.MAX_SAFE_INTEGER ? '' : max} entries, each ${c.expected}`
  return custom(expected, (name, v) => {
    if (!Array.isArray(v) || v.length < min || v.length > max) fail('ERR_ARGUMENT', `${name}: expected ${expected}, got ${show(v)}`)
    return v.map((x, i) => c(`${name}[${i}]`, x))
  })
}

export type Schema = Record<string, Check<unknown>>
/** The parsed form of an options object: every key optional, `undefined` meaning the default. */
export type Parsed<S extends Schema> = { [K in keyof S]?: S[K] extends Check<infer T> ? Exclude<T, undefined> : never }

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v) && !(v instanceof Map)

/**
 * An options object: a plain object whose keys are all in `schema` (an unknown key fails naming
 * the nearest known one) and whose defined values pass their checks; `undefined` values are skipped.
 * `required` keys must be present and defined. `open` lets other keys through (for records a
 * library call returned, which may carry more than the checks look at).
 */
export function object<S extends Schema>(schema: S, required: readonly (keyof S & string)[] = [], open = false): Check<Parsed<S>> {
  const keys = Object.keys(schema)
  // "name.key" for each key, made once per name (options are checked on every op call)
  const paths = new Map<string, string[]>()
  return custom('an options object', (name, v) => {
    if (!isPlainObject(v)) fail('ERR_ARGUMENT', `${name}: expected ${open ? 'an object' : 'an options object'}, got ${show(v)}`)
    if (!open) for (const k in v)
      if (Object.prototype.hasOwnProperty.call(v, k) && !Object.prototype.hasOwnProperty.call(schema, k))
        fail('ERR_ARGUMENT', `${name}.${k}: unknown option ${show(k)}; did you mean '${nearest(k, keys)}'? (known: ${keys.join(', ')})`)
    let path = paths.get(name)
    if (!path) {
      path = keys.map((k) => `${name}.${k}`)
      if (paths.size < 64) paths.set(name, path)
    }
    const out: Record<string, unknown> = {}
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i], x = v[k]
      if (x === undefined) {
        if (required.includes(k)) fail('ERR_ARGUMENT', `${path[i]}: required, expected ${schema[k].expected}`)
        continue
      }
      out[k] = schema[k](path[i], x)
    }
    return out as Parsed<S>
  })
}

// each schema's object check, made once (per list of required keys)
const compiled = new WeakMap<object, Map<string, Check<unknown>>>()

/** Checks an options argument: omitted (`undefined`) means every default; null is rejected. */
export function checkOptions<S extends Schema>(name: string, value: unknown, schema: S | Check<Parsed<S>>, required: readonly (keyof S & string)[] = []): Parsed<S> {
  if (typeof schema === 'function' && value !== undefined) return schema(name, value)
  // omitted options with nothing required: every default, the common case of an op call
  if (value === undefined && required.length === 0 && typeof schema !== 'function') return {} as Parsed<S>
  let byRequired = compiled.get(schema)
  if (!byRequired) compiled.set(schema, (byRequired = new Map()))
  const key = required.length === 0 ? '' : required.join(',')
  let c = byRequired.get(key)
  if (!c) byRequired.set(key, (c = object(schema as S, required) as Check<unknown>))
  return c(name, value === undefined ? {} : value) as Parsed<S>
}

/** Checks one positional argument; returns it typed. */
export function arg<T>(name: string, value: unknown, c: Check<T>): T {
  return c(name, value)
}

/** Edit distance with adjacent swaps (optimal string alignment), case-insensitive, a case-only difference 0.5. */
export function editDistance(a: string, b: string): number {
  const x = a.toLowerCase(), y = b.toLowerCase()
  const d = Array.from({ length: x.length + 1 }, (_, i) => Array.from({ length: y.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  for (let i = 1; i <= x.length; i++)
    for (let j = 1; j <= y.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1))
      // 'topk' for 'topK' and 'bet2a' for 'beta2' are one slip each
      if (i > 1 && j > 1 && x[i - 1] === y[j - 2] && x[i - 2] === y[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  const n = d[x.length][y.length]
  return n === 0 && a !== b ? 0.5 : n
}

/** The candidate nearest to `key` by edit distance (ties: first listed). */
export function nearest(key: string, candidates: readonly string[]): string {
  let best = candidates[0], bestD = Infinity
  for (const c of candidates) {
    const d = editDistance(key, c)
    if (d < bestD) [best, bestD] = [c, d]
  }
  return best
}
