#!/usr/bin/env node
// The package's command line: `versatile-ffn bench [options]`, `versatile-ffn tokenize ...`.
import * as fs from 'fs'
import { HELP, UsageError, parseBenchArgs } from './bench/args'

export interface CliIO {
  stdout: { write(s: string): void }
  stderr: { write(s: string): void; isTTY?: boolean }
}

const USAGE = `Usage: versatile-ffn <command> [options]

Commands:
  bench      time VersatileFFN against the dense FFN and baselines (see: versatile-ffn bench --help)
  bench serve  the generation engine under concurrent requests (see: versatile-ffn bench serve --help)
  tokenize   text files to llm.c token files with GPT-2's BPE (see: versatile-ffn tokenize --help)
  train      train a language model on token files (see: versatile-ffn train --help)
  chart      overlay the loss curves of training runs in one SVG (see: versatile-ffn chart --help)

Options:
  -h, --help     this text
  --version      the package version
`

/** Runs the command line; resolves with the exit code (0 ok, 1 failure, 2 bad usage). Never exits the process. */
export async function main(argv: readonly string[], io: CliIO = process): Promise<number> {
  const [cmd, ...rest] = argv
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    ;(cmd === undefined ? io.stderr : io.stdout).write(USAGE)
    return cmd === undefined ? 2 : 0
  }
  if (cmd === '--version') {
    const pkg = JSON.parse(fs.readFileSync(`${__dirname}/../package.json`, 'utf8')) as { version: string }
    io.stdout.write(`${pkg.version}\n`)
    return 0
  }
  if (cmd === 'tokenize') return tokenize(rest, io)
  if (cmd === 'train' || cmd === 'chart') {
    // loaded here so that the other commands never touch the training code
    const { trainCommand, chartCommand } = await import('./train/cli')
    return cmd === 'train' ? trainCommand(rest, io) : chartCommand(rest, io)
  }
  if (cmd !== 'bench') {
    io.stderr.write(`versatile-ffn: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`)
    return 2
  }
  if (rest[0] === 'serve') return serve(rest.slice(1), io)
  let parsed
  try {
    parsed = parseBenchArgs(rest)
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`versatile-ffn bench: ${e.message}\n(see versatile-ffn bench --help)\n`)
      return 2
    }
    throw e
  }
  if (parsed.help) {
    io.stdout.write(HELP)
    return 0
  }
  try {
    // loaded here so that --help and usage errors work even where the native addon does not load
    const { runBench } = await import('./bench/run')
    await runBench(parsed.options, io)
    return 0
  } catch (e) {
    const err = e as { code?: string; message?: string }
    io.stderr.write(`versatile-ffn bench: ${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`)
    return 1
  }
}

async function serve(argv: readonly string[], io: CliIO): Promise<number> {
  const { SERVE_HELP, parseServeArgs, runServeBench } = await import('./bench/serve')
  let parsed
  try {
    parsed = parseServeArgs(argv)
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`versatile-ffn bench serve: ${e.message}\n(see versatile-ffn bench serve --help)\n`)
      return 2
    }
    throw e
  }
  if (parsed.help) {
    io.stdout.write(SERVE_HELP)
    return 0
  }
  try {
    await runServeBench(parsed.options, io)
    return 0
  } catch (e) {
    const err = e as { code?: string; message?: string }
    io.stderr.write(`versatile-ffn bench serve: ${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`)
    return 1
  }
}

async function tokenize(argv: readonly string[], io: CliIO): Promise<number> {
  // loaded here so that the bench command never touches the data code
  const { parseTokenizeArgs, runTokenize, TOKENIZE_HELP } = await import('./data/tokenize')
  let parsed
  try {
    parsed = parseTokenizeArgs(argv)
  } catch (e) {
    if (!(e instanceof UsageError)) throw e
    io.stderr.write(`versatile-ffn tokenize: ${e.message}\n(see versatile-ffn tokenize --help)\n`)
    return 2
  }
  if (parsed.help) {
    io.stdout.write(TOKENIZE_HELP)
    return 0
  }
  try {
    runTokenize(parsed.options, io)
    return 0
  } catch (e) {
    const err = e as { code?: string; message?: string }
    io.stderr.write(`versatile-ffn tokenize: ${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`)
    return 1
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (e: unknown) => {
      process.stderr.write(`versatile-ffn: ${(e as Error)?.stack ?? String(e)}\n`)
      process.exitCode = 1
    },
  )
}
