// `versatile-ffn tokenize`: text files to llm.c token files (train and val) with GPT-2's BPE,
// streamed in pieces so a file is never held whole, each document preceded by <|endoftext|>.
import * as fs from 'fs'
import * as path from 'path'
import { StringDecoder } from 'string_decoder'
import { UsageError } from '../bench/args'
import { LlmcWriter } from './formats'
import { GPT2Tokenizer, GPT2_EOT } from './tokenizer'

export const TOKENIZE_HELP = `Usage: versatile-ffn tokenize INPUT.txt... --out DATA.bin [--val-fraction F]

Encodes text files with GPT-2's BPE (50,257 ids; the optional dependency gpt-tokenizer) into llm.c
token files (256 x int32 header, uint16 tokens). Each input file is one document, preceded by
<|endoftext|> (50256). The first F of the input bytes (cut at a line break) become the validation
split, the rest the training split: --out data.bin writes data_train.bin and data_val.bin.

Options:
  --out FILE           output name; _train and _val are put before its extension
  --val-fraction F     share of the input for validation, 0 <= F < 1 (default 0.01; 0: no val file)
  -h, --help           this text
`

export interface TokenizeOptions {
  inputs: string[]
  out: string
  valFraction: number
}

/** Parses the arguments after `tokenize`; throws UsageError naming the flag or file. */
export function parseTokenizeArgs(argv: readonly string[]): { help: true } | { help: false; options: TokenizeOptions } {
  const inputs: string[] = []
  let out: string | undefined, frac: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '-h' || a === '--help') return { help: true }
    if (!a.startsWith('--')) {
      inputs.push(a)
      continue
    }
    const eq = a.indexOf('=')
    const name = a.slice(2, eq < 0 ? undefined : eq)
    if (name !== 'out' && name !== 'val-fraction') throw new UsageError(`unknown option --${name}`)
    let v: string
    if (eq >= 0) v = a.slice(eq + 1)
    else {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('--')) throw new UsageError(`--${name}: missing value`)
      v = argv[++i]
    }
    if ((name === 'out' ? out : frac) !== undefined) throw new UsageError(`--${name} given twice`)
    if (name === 'out') out = v
    else frac = v
  }
  if (inputs.length === 0) throw new UsageError('expected at least one input text file')
  if (out === undefined || out === '') throw new UsageError('--out: required, the output file name (e.g. --out data.bin)')
  const valFraction = frac === undefined ? 0.01 : Number(frac)
  if (frac !== undefined && (!/^\d*\.?\d+(e-?\d+)?$/i.test(frac) || !(valFraction >= 0 && valFraction < 1)))
    throw new UsageError(`--val-fraction: expected a number in [0, 1), got ${JSON.stringify(frac)}`)
  for (const f of inputs) {
    const st = fs.statSync(f, { throwIfNoEntry: false })
    if (!st) throw new UsageError(`${f}: no such file`)
    if (!st.isFile()) throw new UsageError(`${f}: not a file`)
  }
  const dir = path.dirname(path.resolve(out))
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--out: the folder ${dir} does not exist`)
  return { help: false, options: { inputs, out, valFraction } }
}

/** data.bin -> data_train.bin and data_val.bin (llm.c's naming). */
export function splitNames(out: string): { train: string; val: string } {
  const ext = path.extname(out) || '.bin'
  const stem = path.extname(out) ? out.slice(0, -ext.length) : out
  return { train: `${stem}_train${ext}`, val: `${stem}_val${ext}` }
}

/**
 * The first index >= from where text can be cut without changing GPT-2's pre-tokenization: just
 * after a lone "\n" between two non-space characters (the pre-tokenizer splits there anyway, and
 * a longer whitespace run cut in the middle would encode differently). -1 if none.
 */
export function cutPoint(text: string, from: number): number {
  for (let i = Math.max(from, 2); i < text.length; i++)
    if (text.charCodeAt(i - 1) === 10 && !/\s/.test(text[i - 2]) && !/\s/.test(text[i])) return i
  return -1
}

export interface TokenizeIO {
  stdout: { write(s: string): void }
  stderr: { write(s: string): void; isTTY?: boolean }
}

/** Runs the command: writes the files, a progress line on stderr, a summary on stdout. */
export function runTokenize(o: TokenizeOptions, io: TokenizeIO, pieceBytes = 1 << 20): { train: number; val: number } {
  const tok = new GPT2Tokenizer()
  tok.encode('') // loads gpt-tokenizer, or fails saying how to install it, before any file is written
  const names = splitNames(o.out)
  const total = o.inputs.reduce((n, f) => n + fs.statSync(f).size, 0)
  const valBytes = Math.ceil(o.valFraction * total)
  const train = new LlmcWriter(names.train)
  const val = o.valFraction > 0 ? new LlmcWriter(names.val) : undefined
  const start = Date.now()
  let read = 0, routedVal = 0, lastShown = 0
  const show = (final: boolean) => {
    const s = (Date.now() - start) / 1000
    const line = `tokenize: ${(read / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB (${total ? Math.round((100 * read) / total) : 100}%), ${train.tokens + (val?.tokens ?? 0)} tokens, ${(read / 1e6 / Math.max(s, 1e-3)).toFixed(2)} MB/s`
    if (io.stderr.isTTY) io.stderr.write(`\r\x1b[2K${line}${final ? '\n' : ''}`)
    else if (final || s - lastShown >= 5) {
      io.stderr.write(line + '\n')
      lastShown = s
    }
  }
  try {
    const buf = Buffer.alloc(pieceBytes)
    for (const file of o.inputs) {
      const fd = fs.openSync(file, 'r')
      try {
        const dec = new StringDecoder('utf8')
        let pending = '', first = true, eof = false
        // a piece goes to val while the val split is short of its bytes, then everything to train
        const emit = (text: string) => {
          const ids = tok.encode(text)
          if (first) ids.unshift(GPT2_EOT)
          first = false
          const bytes = Buffer.byteLength(text)
          if (val && routedVal < valBytes) {
            val.write(ids)
            routedVal += bytes
          } else train.write(ids)
        }
        while (!eof) {
          const n = fs.readSync(fd, buf, 0, buf.length, null)
          read += n
          eof = n === 0
          pending += eof ? dec.end() : dec.write(buf.subarray(0, n))
          // cut where the val split ends (if it is still open) or after about a piece's worth
          for (;;) {
            const want = val && routedVal < valBytes ? Math.max(1, valBytes - routedVal) : pieceBytes
            const cut = pending.length > want ? cutPoint(pending, want) : -1
            if (cut < 0) break
            emit(pending.slice(0, cut))
            pending = pending.slice(cut)
          }
          if (!eof) show(false)
        }
        if (pending.length > 0 || first) emit(pending)
      } finally {
        fs.closeSync(fd)
      }
    }
  } finally {
    train.close()
    val?.close()
  }
  show(true)
  io.stdout.write(`${names.train}: ${train.tokens} tokens\n`)
  if (val) io.stdout.write(`${names.val}: ${val.tokens} tokens\n`)
  return { train: train.tokens, val: val?.tokens ?? 0 }
}
