// The model config a checkpoint carries in its metadata: every key needed to rebuild the model,
// written by save() and read back, strictly, by TransformerLM.fromFile.
import { fail, show } from '../errors'
import type { TransformerLMOptions } from './model'

/** The metadata key under which save() stores the model's config as JSON. */
export const CONFIG_KEY = 'versatile-ffn.config'

// every key, always written: a reader never has to guess a default that may have changed
const KEYS = [
  'vocabSize', 'dModel', 'nLayers', 'nHeads', 'hidden', 'maxSeqLen', 'ffn',
  'experts', 'topK', 'maxDepth', 'expertHidden', 'balanceLossWeight', 'loops', 'dtype', 'seed',
] as const
// keys only some FFN kinds use: null in the config of the others
const USED_BY: Partial<Record<(typeof KEYS)[number], readonly string[]>> = {
  expertHidden: ['versatile', 'moe'], balanceLossWeight: ['versatile', 'moe'], loops: ['loops'],
}
// checkpoints written before the k-loop FFN existed have no 'loops' key
const ADDED_LATER: readonly string[] = ['loops']

/** @internal the config as save() writes it (a resolved TransformerLM.config) */
export function configJSON(c: TransformerLMOptions): string {
  const out: Record<string, unknown> = {}
  for (const k of KEYS) out[k] = c[k] ?? null
  return JSON.stringify(out)
}

/**
 * @internal Parses the config metadata of `source`. Throws ERR_ARGUMENT when it is absent, not
 * a JSON object, or has unknown or missing keys (naming them all). Values are checked by the
 * TransformerLM constructor.
 */
export function parseConfig(text: string | undefined, source: string): TransformerLMOptions {
  const where = `${source}: metadata ${show(CONFIG_KEY)}`
  if (text === undefined)
    fail('ERR_ARGUMENT', `${source}: no ${show(CONFIG_KEY)} metadata, so the model cannot be rebuilt from this file; construct the model and call load() instead`)
  let c: unknown
  try {
    c = JSON.parse(text)
  } catch (e) {
    fail('ERR_ARGUMENT', `${where} is not valid JSON (${(e as Error).message})`)
  }
  if (typeof c !== 'object' || c === null || Array.isArray(c)) fail('ERR_ARGUMENT', `${where}: expected a JSON object, got ${show(c)}`)
  const o = c as Record<string, unknown>
  const unknown = Object.keys(o).filter((k) => !(KEYS as readonly string[]).includes(k))
  const missing = KEYS.filter((k) => !(k in o) && !ADDED_LATER.includes(k))
  const problems: string[] = []
  if (unknown.length) problems.push(`unknown key${unknown.length > 1 ? 's' : ''} ${unknown.map(show).join(', ')}`)
  if (missing.length) problems.push(`missing key${missing.length > 1 ? 's' : ''} ${missing.map(show).join(', ')}`)
  if (problems.length) fail('ERR_ARGUMENT', `${where}: ${problems.join('; ')}`)
  const kind = (o.ffn ?? 'versatile') as string
  for (const k of KEYS) {
    const v = k in o ? o[k] : null
    const unused = USED_BY[k] !== undefined && !USED_BY[k]!.includes(kind)
    // the constructor would quietly default a null, so a null is never a value here
    if (unused && v !== null) fail('ERR_ARGUMENT', `${where}: ${k} must be null for a model with ffn ${show(kind)}, got ${show(v)}`)
    if (!unused && v === null) fail('ERR_ARGUMENT', `${where}: ${k} is null`)
  }
  const opts: Record<string, unknown> = {}
  for (const k of KEYS) if (k in o && o[k] !== null) opts[k] = o[k]
  return opts as unknown as TransformerLMOptions
}
