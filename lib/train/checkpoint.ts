// Resumable training checkpoints: one safetensors file with the model's weights under their usual
// names, the AdamW moments under "optimizer.m." and "optimizer.v.", and JSON metadata for the model
// config (as save() writes it), the optimizer's step and hyperparameters, the schedule and `extra`.
import { fail, show } from '../errors'
import { _saveReads, loadSafetensors } from '../io/safetensors'
import { TransformerLM } from '../nn/model'
import { CONFIG_KEY, configJSON, parseConfig } from '../nn/model_config'
import { checkNames } from '../nn/state'
import { AdamW, AdamWState, CosineSchedule } from '../optim/adamw'
import { Tensor } from '../tensor'
import { arg, custom, instance, int, number, object, optional, string } from '../validate'

/** Metadata key of the optimizer's step and hyperparameters (JSON). */
export const OPTIMIZER_KEY = 'versatile-ffn.optimizer'
/** Metadata key of the schedule and the caller's `extra` (JSON). */
export const TRAINING_KEY = 'versatile-ffn.training'
const M = 'optimizer.m.'
const V = 'optimizer.v.'

/** A JSON value: null, a boolean, a finite number, a string, or arrays and plain objects of them. */
export type JSONValue = null | boolean | number | string | JSONValue[] | { [key: string]: JSONValue }

export interface SaveCheckpointOptions {
  model: TransformerLM
  /** the model's optimizer (built from model.parameters()) */
  optimizer: AdamW
  /** the learning-rate schedule of the run, stored so a resumed run can take it back */
  schedule?: CosineSchedule
  /** anything else the run needs to resume (the data position, a run id, ...), as JSON */
  extra?: JSONValue
}

export interface LoadCheckpointOptions {
  /** a model built with the checkpoint's config (its weights are replaced) */
  model: TransformerLM
  /** the model's optimizer, with the checkpoint's hyperparameters (its state is replaced) */
  optimizer: AdamW
}

/** What loadCheckpoint restored besides the tensors. */
export interface CheckpointInfo {
  /** the optimizer's step count */
  step: number
  schedule?: CosineSchedule
  extra?: JSONValue
}

// a value that JSON keeps exactly: no NaN, functions, cycles or class instances that stringify would alter
const jsonValue = custom<JSONValue>('a JSON value', (name, v) => {
  const seen = new Set<unknown>()
  const walk = (path: string, x: unknown): void => {
    if (x === null || typeof x === 'boolean' || typeof x === 'string') return
    if (typeof x === 'number') {
      if (!Number.isFinite(x)) fail('ERR_ARGUMENT', `${path}: expected a JSON value, got ${show(x)} (JSON has no such number)`)
      return
    }
    const plain = typeof x === 'object' && (Array.isArray(x) || Object.getPrototypeOf(x) === Object.prototype || Object.getPrototypeOf(x) === null)
    if (!plain) fail('ERR_ARGUMENT', `${path}: expected a JSON value (null, boolean, finite number, string, array or plain object), got ${show(x)}`)
    if (seen.has(x)) fail('ERR_ARGUMENT', `${path}: a JSON value cannot refer to itself`)
    seen.add(x)
    if (Array.isArray(x)) x.forEach((e, i) => walk(`${path}[${i}]`, e))
    else for (const [k, e] of Object.entries(x as object)) walk(`${path}.${k}`, e)
    seen.delete(x)
  }
  walk(name, v)
  return v as JSONValue
})
const SCHEDULE = object({ lr: number({ min: 0 }), warmupSteps: int(0), totalSteps: int(0), minRatio: optional(number({ min: 0, max: 1 })) }, ['lr', 'warmupSteps', 'totalSteps'])
const SAVE_OPTIONS = object(
  { model: instance(TransformerLM), optimizer: instance(AdamW), schedule: optional(SCHEDULE), extra: optional(jsonValue) },
  ['model', 'optimizer'],
)
const LOAD_OPTIONS = object({ model: instance(TransformerLM), optimizer: instance(AdamW) }, ['model', 'optimizer'])

function checkPair(model: TransformerLM, optimizer: AdamW): void {
  if (!optimizer._updates(model.parameters()))
    fail('ERR_ARGUMENT', "opts.optimizer: this optimizer updates another model's parameters; build it from model.parameters()")
}

/**
 * Writes a resumable training checkpoint to `path`: every parameter (float32, under its SPEC.md
 * name, with the model config in the metadata exactly as save() writes it), the optimizer's
 * moments as "optimizer.m.<name>" and "optimizer.v.<name>", and the step, hyperparameters,
 * schedule and `extra` as JSON metadata. The values are those after every op queued before the
 * call (later ones are not included); the step counts only the updates among those that
 * applied. The file opens in PyTorch tooling; TransformerLM.load(path, { strict: false })
 * reads its weights alone.
 */
export async function saveCheckpoint(path: string, opts: SaveCheckpointOptions): Promise<void> {
  arg('path', path, string)
  const o = arg('opts', opts, SAVE_OPTIONS) as SaveCheckpointOptions
  checkPair(o.model, o.optimizer)
  const st = o.optimizer.stateDict()
  const step = o.optimizer._settledStep()
  const tensors: Record<string, Tensor> = o.model.stateDict()
  for (const n of Object.keys(st.m)) {
    tensors[M + n] = st.m[n] as Tensor
    tensors[V + n] = st.v[n] as Tensor
  }
  // the reads are queued before anything is awaited, so they see exactly the ops queued before this call
  const names = Object.keys(tensors).sort()
  const reads = names.map((n) => ({ name: n, shape: tensors[n].shape, data: tensors[n].data() }))
  for (const r of reads) r.data.catch(() => undefined) // a failed read rejects in _saveReads, never unhandled while we wait
  const hyper = { lr: st.lr, betas: st.betas, eps: st.eps, weightDecay: st.weightDecay, maxGradNorm: st.maxGradNorm, decays: st.decays }
  // everything the caller passed is captured now: they may change it while the file is written
  const training = JSON.stringify({ schedule: o.schedule ?? null, extra: o.extra ?? null })
  const config = configJSON(o.model.config)
  const meta: Record<string, string> = {
    format: 'pt', [CONFIG_KEY]: config, [OPTIMIZER_KEY]: JSON.stringify({ step: await step, ...hyper }), [TRAINING_KEY]: training,
  }
  await _saveReads(path, reads, meta)
}

function parseJSON(text: string | undefined, key: string, source: string): Record<string, unknown> {
  if (text === undefined) fail('ERR_ARGUMENT', `${source}: no ${show(key)} metadata: not a training checkpoint (saveCheckpoint writes one)`)
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    fail('ERR_ARGUMENT', `${source}: metadata ${show(key)} is not valid JSON (${(e as Error).message})`)
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('ERR_ARGUMENT', `${source}: metadata ${show(key)}: expected a JSON object, got ${show(v)}`)
  return v as Record<string, unknown>
}

/**
 * Restores a checkpoint of saveCheckpoint into `model` and `optimizer`, all or nothing: the
 * file's model config must equal the model's (every key but dtype), its tensors must be exactly
 * the model's parameters and one first and second moment per parameter, with their shapes, and
 * its hyperparameters those of the optimizer (see AdamW.loadStateDict); on any mismatch it
 * rejects with a VffnError naming it and nothing changes. Resolves with the step, schedule and
 * `extra` stored.
 */
export async function loadCheckpoint(path: string, opts: LoadCheckpointOptions): Promise<CheckpointInfo> {
  arg('path', path, string)
  const o = arg('opts', opts, LOAD_OPTIONS) as LoadCheckpointOptions
  checkPair(o.model, o.optimizer)
  const { tensors, metadata } = await loadSafetensors(path)
  const source = show(path)
  // the model: the same config, so the weights mean the same thing and the Gumbel seeds repeat
  const cfg = parseConfig(metadata[CONFIG_KEY], source) as unknown as Record<string, unknown>
  const mine = JSON.parse(configJSON(o.model.config)) as Record<string, unknown>
  const differ = Object.keys(mine).filter((k) => k !== 'dtype' && show(cfg[k] ?? null) !== show(mine[k]))
  if (differ.length)
    fail('ERR_ARGUMENT', `${source}: the checkpoint's model config differs from the model's in ${differ.map((k) => `${k} (${show(cfg[k] ?? null)}, the model has ${show(mine[k])})`).join(', ')}`)
  const params = [...o.model.parameters()]
  const want: [string, readonly number[]][] = []
  for (const [n, p] of params) want.push([n, p.shape], [M + n, p.shape], [V + n, p.shape])
  checkNames(source, want, [...tensors.keys()], true, 'tensor')
  for (const [n, shape] of want) {
    const got = tensors.get(n)!.shape
    if (got.join() !== shape.join()) fail('ERR_SHAPE', `${source}: tensor ${show(n)} has shape ${show(got)}, the model needs ${show(shape)}`)
  }
  // the optimizer
  const h = parseJSON(metadata[OPTIMIZER_KEY], OPTIMIZER_KEY, source)
  const tr = parseJSON(metadata[TRAINING_KEY], TRAINING_KEY, source)
  const m: Record<string, Float32Array> = {}
  const v: Record<string, Float32Array> = {}
  for (const [n] of params) {
    m[n] = tensors.get(M + n)!.data
    v[n] = tensors.get(V + n)!.data
  }
  const state = o.optimizer._checkState({ ...(h as object), m, v } as AdamWState, `${source}: optimizer`)
  const schedule = tr.schedule === null || tr.schedule === undefined ? undefined : (arg(`${source}: schedule`, tr.schedule, SCHEDULE) as CosineSchedule)
  // everything is checked: now change the model, then the optimizer
  o.model.loadStateDict(Object.fromEntries(params.map(([n]) => [n, tensors.get(n)!.data])))
  o.optimizer.loadStateDict(state)
  const info: CheckpointInfo = { step: state.step }
  if (schedule) info.schedule = schedule
  if (tr.extra !== null && tr.extra !== undefined) info.extra = tr.extra as JSONValue
  return info
}
