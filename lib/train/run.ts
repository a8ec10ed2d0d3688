// `versatile-ffn train`: builds (or restores) the model, optimizer and data loader, runs the steps,
// logs each one, evaluates, saves checkpoints, and stops cleanly on Ctrl-C with a checkpoint.
// Everything that can be wrong with the request is found before the first step and reported as a
// UsageError (exit code 2); failures while training are errors (exit code 1).
import * as fs from 'fs'
import * as path from 'path'
import { UsageError } from '../bench/args'
import { TokenDataset, TokenLoader, DataPosition } from '../data/dataset'
import { evaluate } from '../data/evaluate'
import { Device } from '../device'
import { VffnError } from '../errors'
import { TransformerLM, TransformerLMOptions } from '../nn/model'
import { CONFIG_KEY, parseConfig } from '../nn/model_config'
import { gumbelTemperature, stretchedTemperature } from '../nn/versatile'
import { AdamW, CosineSchedule, trainStep } from '../optim/adamw'
import { tensor } from '../tensor'
import { JSONValue, TRAINING_KEY, loadCheckpoint, saveCheckpoint } from './checkpoint'
import { CONFIG_NAMES, RunSettings, TrainOptions, files } from './args'
import { renderLossChart } from './chart'
import { CHECKPOINT_FILE, CheckpointLine, LOG_FILE, MODEL_FILE, RunLog, keepLogUntil, readLog } from './log'

/** Where the command writes: progress on stderr, the summary on stdout. */
export interface TrainIO {
  stdout: { write(s: string): void }
  stderr: { write(s: string): void; isTTY?: boolean }
}

/** What a checkpoint of this command keeps in its `extra`, besides the model and optimizer. */
export interface RunExtra {
  version: 1
  settings: RunSettings
  position: DataPosition
  /** seconds of the run so far */
  time: number
  /** training tokens seen so far */
  tokens: number
}

/** Exit code after Ctrl-C (128 + SIGINT), as shells report a process stopped by it. */
export const EXIT_INTERRUPTED = 130

// the metadata of a safetensors file without reading its tensors
function readMetadata(file: string): Record<string, string> {
  const fd = fs.openSync(file, 'r')
  try {
    const len = Buffer.alloc(8)
    if (fs.readSync(fd, len, 0, 8, 0) !== 8) throw new UsageError(`${file}: too short for a safetensors file`)
    const n = Number(len.readBigUInt64LE(0))
    if (n > 100 << 20) throw new UsageError(`${file}: not a safetensors file (header length ${n})`)
    const h = Buffer.alloc(n)
    fs.readSync(fd, h, 0, n, 8)
    const header = JSON.parse(h.toString('utf8')) as { __metadata__?: Record<string, string> }
    return header.__metadata__ ?? {}
  } catch (e) {
    if (e instanceof UsageError) throw e
    throw new UsageError(`${file}: not a readable safetensors file (${(e as Error).message})`)
  } finally {
    fs.closeSync(fd)
  }
}

// a VffnError while setting up is a problem with the request: report it as usage
function setup<T>(what: string, f: () => T): T {
  try {
    return f()
  } catch (e) {
    if (e instanceof VffnError) throw usage(what, e)
    throw e
  }
}
// "--device: device: ..." says the name once
const usage = (what: string, e: VffnError) => new UsageError(`${what}: ${e.message.replace(new RegExp(`^${what.replace(/^--/, '')}: `), '')}`)
async function setupAsync<T>(what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f()
  } catch (e) {
    if (e instanceof VffnError) throw usage(what, e)
    throw e
  }
}

// options the model has only when they differ from today's behaviour, so a model that does not
// know them yet still builds with the defaults, and refuses (by its own validation) anything else
function modelExtras(s: RunSettings): Record<string, string> {
  const x: Record<string, string> = {}
  if (s.precision !== 'float32') x.precision = s.precision
  if (s.recompute !== 'none') x.recompute = s.recompute
  return x
}

async function buildModel(s: RunSettings, device: Device, resumeCfg?: TransformerLMOptions): Promise<TransformerLM> {
  const extras = modelExtras(s)
  // the FFN sizes given on the command line (the model's defaults otherwise)
  const sizes = Object.fromEntries((['experts', 'topK', 'expertHidden', 'loops'] as const).filter((k) => s[k] !== undefined).map((k) => [k, s[k]]))
  if (resumeCfg) return setup('the checkpoint\'s model', () => new TransformerLM({ ...resumeCfg, ...extras, device } as TransformerLMOptions))
  if (s.fromDense) {
    const m = await setupAsync(`--from-dense ${s.fromDense}`, () => TransformerLM.fromDense(s.fromDense!, { seed: s.seed, device, ...sizes }))
    if (s.seq > m.config.maxSeqLen) {
      m.dispose()
      return setupAsync(`--from-dense ${s.fromDense}`, () => TransformerLM.fromDense(s.fromDense!, { seed: s.seed, device, maxSeqLen: s.seq, ...sizes }))
    }
    return m
  }
  const name = CONFIG_NAMES[s.config.toLowerCase()] ?? s.config
  const base = TransformerLM.config(name as 'tiny')
  const opts = {
    ...base, ffn: s.ffn, seed: s.seed, maxSeqLen: Math.max(base.maxSeqLen ?? 0, s.seq),
    ...(s.vocabSize !== undefined ? { vocabSize: s.vocabSize } : {}), ...extras, device,
    ...sizes,
  }
  const flag = s.ffn !== 'versatile' && s.ffn !== 'dense' ? `--ffn ${s.ffn}` : Object.keys(extras).length ? Object.entries(extras).map(([k, v]) => `--${k} ${v}`).join(' ') : `--config ${s.config}`
  return setup(`${flag}: the model refused its options`, () => new TransformerLM(opts as TransformerLMOptions))
}

async function openData(flag: string, list: string[], vocabSize: number): Promise<TokenDataset> {
  const ds = setup(`--${flag}`, () => TokenDataset.open(list, { vocabSize }))
  try {
    await ds.scan()
  } catch (e) {
    ds.close()
    if (e instanceof VffnError) throw new UsageError(`--${flag}: ${e.message}: the dataset's ids do not fit the model's vocabulary of ${vocabSize} (a bigger --config or --vocab-size)`)
    throw e
  }
  return ds
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?'
  if (s < 60) return `${s.toFixed(0)}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** Signals the run listens to; tests pass their own emitter. */
export interface SignalSource {
  on(sig: 'SIGINT' | 'SIGTERM', f: () => void): unknown
  off(sig: 'SIGINT' | 'SIGTERM', f: () => void): unknown
}

/**
 * Runs `versatile-ffn train`. Resolves with the exit code: 0 when the steps are done, 130 when a
 * signal (Ctrl-C) or --stop-at stopped it with a checkpoint (--stop-at: 0). Throws UsageError
 * for a bad request (found before the first step) and other errors for failures while training.
 */
export async function runTrain(o: TrainOptions, io: TrainIO, signals: SignalSource = process): Promise<number> {
  const device = setup('--device', () => Device.get(o.device ?? 'cpu'))
  const out = o.out
  let settings: RunSettings
  let resumed: { file: string; extra: RunExtra; cfg: TransformerLMOptions } | undefined
  if (o.resume !== undefined) {
    const file = path.join(o.resume, CHECKPOINT_FILE)
    const meta = readMetadata(file)
    let extra: RunExtra | undefined
    try {
      extra = meta[TRAINING_KEY] === undefined ? undefined : (JSON.parse(meta[TRAINING_KEY]) as { extra?: RunExtra }).extra
    } catch {
      extra = undefined
    }
    if (!extra || extra.version !== 1 || !extra.settings || !extra.position)
      throw new UsageError(`--resume: ${file} is not a checkpoint of versatile-ffn train (no run settings in its metadata)`)
    const cfg = setup(`--resume ${file}`, () => parseConfig(meta[CONFIG_KEY], file))
    settings = { ...extra.settings }
    const g = o.given
    if (g.has('data')) settings.data = files('data', g.get('data')!)
    if (g.has('val')) settings.val = files('val', g.get('val')!)
    if (g.has('steps')) settings.steps = Number(g.get('steps'))
    // how it reports and saves: as the run was started, unless given again
    settings.evalEvery = g.has('eval-every') ? o.evalEvery : extra.settings.evalEvery ?? 0
    settings.evalBatches = g.has('eval-batches') ? o.evalBatches : extra.settings.evalBatches ?? 8
    settings.saveEvery = g.has('save-every') ? o.saveEvery : extra.settings.saveEvery ?? 0
    settings.chart = o.chart || !!extra.settings.chart
    resumed = { file, extra, cfg }
  } else settings = o.settings!
  const S = settings.seq, B = settings.batch

  const closers: (() => void)[] = []
  const close = () => {
    for (const c of closers.reverse()) c()
  }
  try {
    // the data is checked against the vocabulary before a large model is allocated, where the
    // vocabulary is known without building it (not for --from-dense, whose file says it)
    const knownV = resumed ? resumed.cfg.vocabSize : settings.fromDense ? undefined
      : settings.vocabSize ?? TransformerLM.config((CONFIG_NAMES[settings.config.toLowerCase()] ?? settings.config) as 'tiny').vocabSize
    let train = knownV === undefined ? undefined : await openData('data', settings.data, knownV)
    if (train) closers.push(() => train!.close())
    const model = await buildModel(settings, device, resumed?.cfg)
    closers.push(() => model.dispose())
    const V = model.config.vocabSize
    if (!train) {
      train = await openData('data', settings.data, V)
      closers.push(() => train!.close())
    }
    if (S > model.config.maxSeqLen) throw new UsageError(`--seq: ${S} exceeds the model's maxSeqLen ${model.config.maxSeqLen}`)
    const loader: TokenLoader = setup('--seq', () => train!.loader({ batchSize: B, seqLen: S, seed: settings.seed, device }))
    let val: TokenDataset | undefined
    let evalBatches = 0
    if (settings.val.length) {
      val = await openData('val', settings.val, V)
      closers.push(() => val!.close())
      const windows = Math.floor((val.tokens - 1) / S)
      evalBatches = Math.min(settings.evalBatches, Math.floor(windows / B))
      if (evalBatches === 0) throw new UsageError(`--val: ${val.tokens} tokens hold no batch of ${B} sequences of ${S + 1} tokens`)
    }
    const opt = setup('the optimizer', () => new AdamW(model.parameters(), model.gradients(), { lr: settings.lr, weightDecay: settings.weightDecay, maxGradNorm: settings.gradClip }))
    closers.push(() => opt.dispose())
    const schedule: CosineSchedule = { lr: settings.lr, warmupSteps: settings.warmup, totalSteps: settings.steps, minRatio: settings.minLrRatio }

    let step = 0, time = 0, seen = 0
    if (resumed) {
      const info = await setupAsync(`--resume ${resumed.file}`, () => loadCheckpoint(resumed!.file, { model, optimizer: opt }))
      step = info.step
      time = resumed.extra.time
      seen = resumed.extra.tokens
      setup('--resume (the data position)', () => loader.restore(resumed!.extra.position))
      if (step >= settings.steps) throw new UsageError(`--steps: the run is at step ${step} already; give a larger --steps to continue it`)
    }
    if (o.stopAt !== undefined && (o.stopAt <= step || o.stopAt >= settings.steps))
      throw new UsageError(`--stop-at: expected a step after ${step} and before --steps ${settings.steps}, got ${o.stopAt}`)

    // the run folder: a fresh log, or the resumed run's log up to its checkpoint
    const same = resumed && path.resolve(out) === path.resolve(o.resume!)
    if (resumed && !same && fs.existsSync(path.join(out, LOG_FILE))) throw new UsageError(`--out: ${out} already holds a run (log.jsonl)`)
    fs.mkdirSync(out, { recursive: true })
    if (resumed && fs.existsSync(path.join(o.resume!, LOG_FILE))) keepLogUntil(o.resume!, out, step)
    const log = new RunLog(out)
    closers.push(() => log.close())
    const versatile = model.config.ffn === 'versatile'
    const settingsJSON = JSON.parse(JSON.stringify(settings)) as RunSettings
    log.write({
      type: 'start', step, time, resumed: !!resumed, date: new Date().toISOString(), parameters: model.numParameters(),
      settings: settingsJSON as unknown as Record<string, unknown>, model: JSON.parse(JSON.stringify(model.config)) as Record<string, unknown>,
    })

    const ckpt = path.join(out, CHECKPOINT_FILE)
    const weights = path.join(out, MODEL_FILE)
    const save = async (reason: CheckpointLine['reason']) => {
      const extra: RunExtra = { version: 1, settings: settingsJSON, position: loader.position(), time, tokens: seen }
      const tmp = `${ckpt}.tmp`
      await saveCheckpoint(tmp, { model, optimizer: opt, schedule, extra: extra as unknown as JSONValue })
      fs.renameSync(tmp, ckpt)
      log.write({ type: 'checkpoint', step, file: CHECKPOINT_FILE, reason, time })
      // the weights alone, as save() writes them: TransformerLM.fromFile and --from-dense read this file
      if (reason !== 'save-every') {
        await model.save(`${weights}.tmp`)
        fs.renameSync(`${weights}.tmp`, weights)
      }
    }
    let lastVal: number | undefined
    const validate = async () => {
      const r = await evaluate(model, val!, { batchSize: B, seqLen: S, batches: evalBatches })
      lastVal = r.loss
      log.write({ type: 'val', step, loss: r.loss, perplexity: r.perplexity, tokens: r.tokens, time })
      return r
    }
    const chart = () => {
      if (settings.chart) fs.writeFileSync(path.join(out, 'loss.svg'), renderLossChart([{ name: path.basename(path.resolve(out)), lines: readLog(out) }]))
    }

    let stopping: string | undefined
    const onSignal = () => {
      stopping = 'interrupted'
      // a second Ctrl-C gets the default behaviour: the process ends at once, without a checkpoint
      signals.off('SIGINT', onSignal)
      signals.off('SIGTERM', onSignal)
      io.stderr.write(`${io.stderr.isTTY ? '\n' : ''}train: interrupted; saving a checkpoint after the current step (Ctrl-C again stops at once, without one)\n`)
    }
    signals.on('SIGINT', onSignal)
    signals.on('SIGTERM', onSignal)
    try {
      const first = step
      const start = process.hrtime.bigint()
      const since = () => Number(process.hrtime.bigint() - start) / 1e9
      let lastShown = -Infinity, loss = NaN
      const progress = (final: boolean) => {
        const el = since()
        const rate = ((step - first) * B * S) / Math.max(el, 1e-9)
        const eta = ((settings.steps - step) * el) / Math.max(step - first, 1)
        const parts = [`train: step ${step}/${settings.steps}`, `loss ${loss.toFixed(4)}`, `${rate.toFixed(0)} tok/s`, `lr ${lastLr.toExponential(2)}`]
        if (versatile) parts.push(`τ ${lastTau.toFixed(3)}`, `loops ${lastLoops.toFixed(2)}`)
        if (lastVal !== undefined) parts.push(`val ${lastVal.toFixed(4)}`)
        parts.push(`ETA ${fmtTime(eta)}`)
        const line = parts.join('  ')
        if (io.stderr.isTTY) io.stderr.write(`\r\x1b[2K${line}${final ? '\n' : ''}`)
        else if (final || el - lastShown >= 2 || step === first + 1) {
          io.stderr.write(line + '\n')
          lastShown = el
        }
      }
      let lastLr = 0, lastTau = 0, lastLoops = 0
      while (step < settings.steps && !stopping) {
        const t0 = process.hrtime.bigint()
        const { tokens, targets } = loader.nextArrays()
        const x = tensor(tokens, [B, S], { dtype: 'int32', device })
        const stretched = settings.temperature === 'stretched'
        const tau = versatile ? (stretched ? stretchedTemperature(opt.step, settings.steps) : gumbelTemperature(opt.step)) : null
        const r = trainStep(model, opt, x, targets, {
          schedule, accumulate: settings.accumulate, stats: versatile, ...(stretched && tau !== null ? { temperature: tau } : {}),
        })
        let loops: number | null = null
        try {
          const st = await r.status
          if (!st.ok) throw st.error
          loss = (await r.loss.data())[0]
          const gn = (await r.gradNorm.data())[0]
          if (versatile) {
            let sum = 0, n = 0
            for (const micro of r.stats ?? [])
              for (const s of micro)
                if (s && 'loops' in s) {
                  const l = await s.loops.data()
                  for (let i = 0; i < l.length; i++) sum += l[i]
                  n += l.length
                }
            loops = n ? sum / n : null
          }
          step++
          seen += B * S
          const dt = Number(process.hrtime.bigint() - t0) / 1e9
          time += dt
          lastLr = r.lr
          lastTau = tau ?? 0
          lastLoops = loops ?? 0
          log.write({ type: 'train', step, loss, lr: r.lr, gradNorm: gn, tau, loops, tokens: seen, tokensPerSec: (B * S) / dt, time })
        } finally {
          for (const t of [x, r.loss, r.gradNorm, ...r.auxLoss]) t.dispose()
          for (const micro of r.stats ?? []) for (const s of micro) s?.dispose()
        }
        if (val && settings.evalEvery && step % settings.evalEvery === 0) await validate()
        progress(false)
        if (o.stopAt === step) {
          stopping = 'stop-at'
          break
        }
        if (settings.saveEvery && step % settings.saveEvery === 0 && step < settings.steps) await save('save-every')
      }
      if (val && (lastVal === undefined || !(settings.evalEvery && step % settings.evalEvery === 0)) && step > first && !stopping) await validate()
      progress(true)
      await save(stopping === 'interrupted' ? 'interrupt' : stopping === 'stop-at' ? 'stop-at' : 'end')
      chart()
      const summary = [`${out}: step ${step}/${settings.steps}`, `loss ${loss.toFixed(4)}`]
      if (lastVal !== undefined) summary.push(`val loss ${lastVal.toFixed(4)}`)
      summary.push(`checkpoint ${ckpt}`)
      if (settings.chart) summary.push(`chart ${path.join(out, 'loss.svg')}`)
      io.stdout.write(summary.join(', ') + '\n')
      if (stopping === 'interrupted') {
        io.stderr.write(`train: stopped at step ${step}; continue with: versatile-ffn train --resume ${out}\n`)
        return EXIT_INTERRUPTED
      }
      return 0
    } finally {
      signals.off('SIGINT', onSignal)
      signals.off('SIGTERM', onSignal)
    }
  } finally {
    close()
  }
}
