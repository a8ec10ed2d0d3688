// GPT-2 BPE encode speed of js-tiktoken and gpt-tokenizer on the same generated English-like text,
// in one run, rounds alternating between the two so machine load hits both alike.
// Needs both installed: npm install --no-save js-tiktoken gpt-tokenizer
// Usage: ts-node --transpile-only bench/tokenizers.ts [MB=4] [rounds=5]
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'

const MB = Number(process.argv[2] ?? 4)
const ROUNDS = Number(process.argv[3] ?? 5)

// a Zipf-like draw over common words, with 1 word in 20 a made-up one so BPE merges (not only caches) are exercised
const WORDS = (
  'the of and to a in is that it was for on are as with his they at be this from have or by one had not but what all ' +
  'were when we there can an your which their said if do will each about how up out them then she many some so these ' +
  'would other into has more her two like him see time could no make than first been its who now people my made over ' +
  'did down only way find use may water long little very after words called just where most know get through back much ' +
  'before go good new write our used me man too any day same right look think also around another came come work three ' +
  'word must because does part even place well such here take why things help put years different away again off went ' +
  'old number great tell men say small every found still between name should home big give air line set own under read ' +
  'last never us left end along while might next sound below saw something thought both few those always looked show ' +
  'large often together asked house world going want school important until form food keep children feet land side without'
).split(' ')
const SYL = ['ka', 'lo', 'mi', 'ren', 'tus', 'vor', 'quel', 'an', 'ix', 'bra', 'dun', 'fes', 'gor', 'hep', 'jan', 'zel']

function generate(bytes: number, seed: number): string {
  let s = seed >>> 0
  const rnd = () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
  const parts: string[] = []
  let n = 0, inSentence = 0
  while (n < bytes) {
    let w: string
    if (rnd() < 0.05) w = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => SYL[Math.floor(rnd() * SYL.length)]).join('')
    else if (rnd() < 0.02) w = String(Math.floor(rnd() * 10000))
    else w = WORDS[Math.floor(WORDS.length * rnd() ** 2.5)]
    if (inSentence === 0) w = w[0].toUpperCase() + w.slice(1)
    inSentence++
    let sep = ' '
    if (inSentence > 6 && rnd() < 0.12) {
      sep = rnd() < 0.8 ? '. ' : rnd() < 0.5 ? '? ' : '!\n\n'
      inSentence = 0
    } else if (rnd() < 0.06) sep = ', '
    parts.push(w, sep)
    n += w.length + sep.length
  }
  return parts.join('')
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

function main(): void {
  let tiktoken: { encode(s: string, a?: unknown, d?: unknown): number[]; decode(ids: number[]): string }
  let gpt: { encode(s: string, o?: unknown): number[]; decode(ids: number[]): string }
  try {
    tiktoken = (require('js-tiktoken') as { getEncoding(n: string): typeof tiktoken }).getEncoding('gpt2')
    gpt = require('gpt-tokenizer/encoding/gpt2')
  } catch (e) {
    console.error(`needs both tokenizers: npm install --no-save js-tiktoken gpt-tokenizer (${(e as Error).message})`)
    process.exitCode = 1
    return
  }
  const text = generate(MB * 1024 * 1024, 1)
  const bytes = Buffer.byteLength(text)
  // js-tiktoken's exports hide its package.json: walk up from the entry point
  const version = (p: string) => {
    for (let d = path.dirname(require.resolve(p)); d !== path.dirname(d); d = path.dirname(d)) {
      const f = path.join(d, 'package.json')
      const j = fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as { name?: string; version?: string }) : {}
      if (j.name === p && j.version) return j.version
    }
    return '?'
  }
  console.log(`GPT-2 BPE encode, ${(bytes / 1048576).toFixed(2)} MiB of generated English-like text, ${ROUNDS} rounds (+1 warm-up), ${os.cpus()[0].model}, node ${process.version}`)
  const cases = [
    { name: `js-tiktoken ${version('js-tiktoken')}`, encode: (s: string) => tiktoken.encode(s, [], []), decode: (x: number[]) => tiktoken.decode(x) },
    { name: `gpt-tokenizer ${version('gpt-tokenizer')}`, encode: (s: string) => gpt.encode(s, { disallowedSpecial: new Set() }), decode: (x: number[]) => gpt.decode(x) },
  ]
  const ids = cases.map((c) => c.encode(text))
  const same = ids[0].length === ids[1].length && ids[0].every((v, i) => v === ids[1][i])
  const enc = cases.map(() => [] as number[]), dec = cases.map(() => [] as number[])
  for (let r = 0; r < ROUNDS; r++)
    cases.forEach((c, i) => {
      let t0 = process.hrtime.bigint()
      c.encode(text)
      enc[i].push(Number(process.hrtime.bigint() - t0) / 1e9)
      t0 = process.hrtime.bigint()
      c.decode(ids[i])
      dec[i].push(Number(process.hrtime.bigint() - t0) / 1e9)
    })
  console.log('tokenizer               encode MB/s (median, min..max)   decode MB/s (median)   tokens')
  cases.forEach((c, i) => {
    const mbs = (t: number) => bytes / 1e6 / t
    console.log(`${c.name.padEnd(24)}${mbs(median(enc[i])).toFixed(2).padStart(8)}  (${mbs(Math.max(...enc[i])).toFixed(2)}..${mbs(Math.min(...enc[i])).toFixed(2)})${''.padEnd(14)}${mbs(median(dec[i])).toFixed(1).padStart(8)}   ${ids[i].length}`)
  })
  console.log(`same ids from both: ${same}; ratio (gpt-tokenizer / js-tiktoken encode MB/s): ${(median(enc[0]) / median(enc[1])).toFixed(2)}`)
}

main()
