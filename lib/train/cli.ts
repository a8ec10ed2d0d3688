// The `train` and `chart` commands as lib/cli.ts dispatches them: usage errors exit with code 2,
// failures while running with code 1, a run stopped by Ctrl-C with 130 after its checkpoint.
import { UsageError } from '../bench/args'
import { CHART_HELP, TRAIN_HELP, parseChartArgs, parseTrainArgs } from './args'

interface IO {
  stdout: { write(s: string): void }
  stderr: { write(s: string): void; isTTY?: boolean }
}

function usage(cmd: string, e: UsageError, io: IO): number {
  io.stderr.write(`versatile-ffn ${cmd}: ${e.message}\n(see versatile-ffn ${cmd} --help)\n`)
  return 2
}

function failure(cmd: string, e: unknown, io: IO): number {
  const err = e as { code?: string; message?: string }
  io.stderr.write(`versatile-ffn ${cmd}: ${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`)
  return 1
}

/** `versatile-ffn train ...`; resolves with the exit code. */
export async function trainCommand(argv: readonly string[], io: IO): Promise<number> {
  let parsed
  try {
    parsed = parseTrainArgs(argv)
  } catch (e) {
    if (e instanceof UsageError) return usage('train', e, io)
    throw e
  }
  if (parsed.help) {
    io.stdout.write(TRAIN_HELP)
    return 0
  }
  try {
    // loaded here so that --help and usage errors work even where the native addon does not load
    const { runTrain } = await import('./run')
    return await runTrain(parsed.options, io)
  } catch (e) {
    if (e instanceof UsageError) return usage('train', e, io)
    return failure('train', e, io)
  }
}

/** `versatile-ffn chart DIR... [--out FILE]`; resolves with the exit code. */
export async function chartCommand(argv: readonly string[], io: IO): Promise<number> {
  let parsed
  try {
    parsed = parseChartArgs(argv)
  } catch (e) {
    if (e instanceof UsageError) return usage('chart', e, io)
    throw e
  }
  if (parsed.help) {
    io.stdout.write(CHART_HELP)
    return 0
  }
  try {
    const { runChart } = await import('./chart')
    runChart(parsed.dirs, parsed.out, io)
    return 0
  } catch (e) {
    return failure('chart', e, io)
  }
}
