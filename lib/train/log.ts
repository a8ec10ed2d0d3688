// The run folder's log: DIR/log.jsonl, one JSON object per line (README's "The training log"
// gives the fields). Appended line by line, so a run that dies leaves every line it finished.
import * as fs from 'fs'
import * as path from 'path'

/** One optimizer step. */
export interface TrainLine {
  type: 'train'
  /** steps done, counting this one (1-based) */
  step: number
  /** mean cross-entropy of the step's batch, in nats */
  loss: number
  lr: number
  /** gradient norm before clipping */
  gradNorm: number
  /** Gumbel temperature of the step (null without VersatileFFN layers) */
  tau: number | null
  /** mean loops per token over the layers and tokens (null without VersatileFFN layers) */
  loops: number | null
  /** training tokens seen so far (B·S per step) */
  tokens: number
  tokensPerSec: number
  /** seconds of training so far, summed over every process of the run */
  time: number
}

/** A validation pass. */
export interface ValLine {
  type: 'val'
  step: number
  loss: number
  perplexity: number
  tokens: number
  time: number
}

/** A checkpoint written. */
export interface CheckpointLine {
  type: 'checkpoint'
  step: number
  file: string
  reason: 'save-every' | 'end' | 'interrupt' | 'stop-at'
  time: number
}

/** A process starting (or resuming) the run. */
export interface StartLine {
  type: 'start'
  step: number
  time: number
  resumed: boolean
  date: string
  parameters: number
  settings: Record<string, unknown>
  model: Record<string, unknown>
}

export type LogLine = TrainLine | ValLine | CheckpointLine | StartLine

export const LOG_FILE = 'log.jsonl'
export const CHECKPOINT_FILE = 'checkpoint.safetensors'
export const MODEL_FILE = 'model.safetensors'

/** Every line of DIR/log.jsonl; a torn last line (a run killed mid-write) is skipped. */
export function readLog(dir: string): LogLine[] {
  const text = fs.readFileSync(path.join(dir, LOG_FILE), 'utf8')
  const out: LogLine[] = []
  const lines = text.split('\n')
  lines.forEach((l, i) => {
    if (l.trim() === '') return
    try {
      out.push(JSON.parse(l) as LogLine)
    } catch (e) {
      if (i < lines.length - 1 && lines.slice(i + 1).some((x) => x.trim() !== '')) throw new Error(`${path.join(dir, LOG_FILE)}: line ${i + 1} is not JSON`)
    }
  })
  return out
}

/** Appends lines to a log. */
export class RunLog {
  private readonly fd: number
  constructor(dir: string) {
    this.fd = fs.openSync(path.join(dir, LOG_FILE), 'a')
  }

  write(line: LogLine): void {
    fs.writeSync(this.fd, JSON.stringify(line) + '\n')
  }

  close(): void {
    fs.closeSync(this.fd)
  }
}

/**
 * Writes `to`/log.jsonl as the lines of `from`'s log up to step `step` (a resumed run continues
 * from its checkpoint: lines a dead process logged after it are dropped, its steps run again).
 */
export function keepLogUntil(from: string, to: string, step: number): void {
  const keep = readLog(from).filter((l) => l.step <= step)
  const tmp = path.join(to, `${LOG_FILE}.tmp`)
  fs.writeFileSync(tmp, keep.map((l) => JSON.stringify(l) + '\n').join(''))
  fs.renameSync(tmp, path.join(to, LOG_FILE))
}
