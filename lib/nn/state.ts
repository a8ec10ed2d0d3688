// State dicts load all or nothing: every name and value is checked, and every source staged,
// before the first parameter changes, so a bad entry anywhere leaves the module as it was.
import { Device } from '../device'
import { fail, show } from '../errors'
import { Tensor, tensor } from '../tensor'
import { bool, checkOptions, optional } from '../validate'

/** Options of loadStateDict and TransformerLM.load. */
export interface LoadOptions {
  /**
   * Reject names the module does not have (default true). With false they are skipped and
   * returned in `ignored`; missing names are an error either way.
   */
  strict?: boolean
}

/** What a load left out. */
export interface LoadResult {
  /** names in the input that the module has no parameter for (always empty when strict) */
  ignored: string[]
}

/** A state dict value: a Tensor (float32 or bfloat16, on the module's device) or host values. */
export type StateValue = Tensor | Float32Array

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i])
const plural = (n: number, word: string) => (n === 1 ? word : `${n} ${word}s`)

/** @internal reads `{ strict }` (default true) */
export function strictOf(opts: unknown): boolean {
  const o = checkOptions('opts', opts as LoadOptions | undefined, { strict: optional(bool) })
  return o.strict ?? true
}

/**
 * @internal Compares the names a module has (`want`, with shapes) with those given. Throws
 * ERR_ARGUMENT naming every missing name and, when strict, every unexpected one; otherwise
 * returns the unexpected names. `noun` words the message ('tensor' → "missing tensor ...").
 */
export function checkNames(label: string, want: [string, readonly number[]][], given: string[], strict: boolean, noun?: string): string[] {
  const have = new Set(given)
  const known = new Set(want.map(([n]) => n))
  const missing = want.filter(([n]) => !have.has(n))
  const extra = given.filter((n) => !known.has(n))
  const problems: string[] = []
  if (missing.length)
    problems.push(`missing ${noun ? plural(missing.length, noun) + ' ' : ''}${missing.map(([n, s]) => `${show(n)} (shape ${show(s)})`).join(', ')}`)
  if (extra.length && strict)
    problems.push(`unexpected ${noun ?? 'name'}${extra.length > 1 ? 's' : ''} ${extra.map(show).join(', ')} (pass { strict: false } to ignore them)`)
  if (problems.length) fail('ERR_ARGUMENT', `${label}: ${problems.join('; ')}`)
  return extra
}

/**
 * @internal Checks every value of `sd` against its parameter (type, disposed, dtype, shape,
 * device), stages host values and aliased parameters, then copies all of them. Throws a
 * VffnError naming the entry before anything changes; names must have been checked already.
 */
export function loadInto(label: string, params: [string, Tensor][], sd: Record<string, unknown>, device: Device): void {
  for (const [name, p] of params) {
    const v = sd[name]
    const where = `${label}: ${name}`
    if (p.disposed) fail('ERR_DISPOSED', `${where}: the parameter has been disposed (was the model disposed?)`)
    if (v instanceof Float32Array) {
      if (v.length !== p.size) fail('ERR_SHAPE', `${where}: expected ${p.size} values (shape ${show(p.shape)}), got ${v.length}`)
    } else if (v instanceof Tensor) {
      v._check(where)
      if (v.dtype === 'int32') fail('ERR_DTYPE', `${where}: expected float32 or bfloat16, got int32`)
      if (!same(v.shape, p.shape)) fail('ERR_SHAPE', `${where}: expected shape ${show(p.shape)}, got ${show(v.shape)}`)
      if (v.device.type !== device.type || v.device.index !== device.index)
        fail('ERR_DEVICE', `${where}: expected a tensor on ${device}, got one on ${v.device}`)
    } else fail('ERR_ARGUMENT', `${where}: expected a Tensor or Float32Array, got ${show(v)}`)
  }
  // a source that is another live parameter would be overwritten before it is read: copy it first
  const live = new Set(params.map(([, p]) => p))
  const staged: Tensor[] = []
  const srcs: Tensor[] = []
  try {
    for (const [name, p] of params) {
      const v = sd[name] as StateValue
      let src: Tensor
      if (v instanceof Float32Array) src = tensor(v, p.shape)
      else if (v !== p && live.has(v)) src = v.clone()
      else src = v
      if (src !== v) staged.push(src)
      srcs.push(src)
    }
    params.forEach(([, p], i) => {
      if (srcs[i] !== p) p.copy_(srcs[i])
    })
  } finally {
    for (const s of staged) s.dispose()
  }
}
