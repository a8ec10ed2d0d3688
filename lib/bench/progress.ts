// Progress on stderr, so stdout stays clean for the table or JSON: a live line on a terminal;
// elsewhere (logs, CI) one line per prepared case and per timed round, so long runs show where time goes.

export interface ProgressSink {
  write(s: string): void
  isTTY?: boolean
}

export class Progress {
  private readonly start = Date.now()
  private live = false

  constructor(private readonly sink: ProgressSink, private readonly total: number) {}

  private line(text: string): string {
    return `bench ${text}  (${((Date.now() - this.start) / 1000).toFixed(1)} s)`
  }

  private show(text: string, keep: boolean): void {
    if (this.sink.isTTY) {
      this.sink.write(`\r\x1b[2K${this.line(text)}`)
      this.live = true
    } else if (keep) this.sink.write(this.line(text) + '\n')
  }

  /** Transient: what case `index` (0-based) is doing now; terminals only. */
  status(index: number, name: string, what: string): void {
    this.show(`[${index + 1}/${this.total}] ${name}: ${what}`, false)
  }

  /** A milestone of one case (ready, failed). */
  note(index: number, name: string, what: string): void {
    this.show(`[${index + 1}/${this.total}] ${name}: ${what}`, true)
  }

  round(r: number, rounds: number): void {
    this.show(`timed round ${r}/${rounds} done`, true)
  }

  /** Clears the live line before the report prints. */
  finish(): void {
    if (this.live) this.sink.write('\r\x1b[2K')
    this.live = false
  }
}
