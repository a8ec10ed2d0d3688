// Progress on stderr, so stdout stays clean for the table or JSON: a live line on a terminal,
// one line per finished case otherwise (logs of long runs then still show where time goes).

export interface ProgressSink {
  write(s: string): void
  isTTY?: boolean
}

export class Progress {
  private readonly start = Date.now()
  private live = false

  constructor(private readonly sink: ProgressSink, private readonly total: number) {}

  private elapsed(): string {
    return `${((Date.now() - this.start) / 1000).toFixed(1)} s`
  }

  /** Case `index` (0-based) of `total`, run `run` of `runs` in phase `phase`. */
  update(index: number, name: string, phase: string, run: number, runs: number): void {
    if (!this.sink.isTTY) return
    const line = `bench [${index + 1}/${this.total}] ${name}: ${phase} ${run}/${runs}  (${this.elapsed()})`
    this.sink.write(`\r\x1b[2K${line}`)
    this.live = true
  }

  caseDone(index: number, name: string, medianMs: number): void {
    const what = Number.isNaN(medianMs) ? 'failed' : `median ${medianMs.toPrecision(3)} ms`
    const line = `bench [${index + 1}/${this.total}] ${name}: ${what}  (${this.elapsed()})`
    if (this.sink.isTTY) {
      this.sink.write(`\r\x1b[2K${line}`)
      this.live = true
    } else this.sink.write(line + '\n')
  }

  /** Clears the live line before the report prints. */
  finish(): void {
    if (this.live) this.sink.write('\r\x1b[2K')
    this.live = false
  }
}
