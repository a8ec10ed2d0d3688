// GPT-2 tokenization: ids equal the library's own encoder, text round-trips through `tokenize`,
// the .bin files and the dataset; usage errors exit 2; without gpt-tokenizer the error says how to install it.
import t from 'tap'
import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { GPT2Tokenizer, GPT2_EOT, TokenDataset } from '../lib/index'
import { main } from '../lib/cli'
import { cutPoint, runTokenize } from '../lib/data/tokenize'

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-tok-'))
t.teardown(() => fs.rmSync(dir, { recursive: true }))
const file = (name: string) => path.join(dir, name)
const capture = () => {
  const o = { out: '', err: '' }
  return { o, io: { stdout: { write: (s: string) => void (o.out += s) }, stderr: { write: (s: string) => void (o.err += s) } } }
}

t.test('usage errors exit 2 and name the problem', async (t) => {
  fs.writeFileSync(file('in.txt'), 'hello\n')
  const cases: [string[], RegExp][] = [
    [['--out', file('o.bin')], /expected at least one input/],
    [[file('in.txt')], /--out: required/],
    [[file('nope.txt'), '--out', file('o.bin')], /nope\.txt: no such file/],
    [[dir, '--out', file('o.bin')], /not a file/],
    [[file('in.txt'), '--out', file('o.bin'), '--val-fraction', '1'], /--val-fraction: expected a number in \[0, 1\), got "1"/],
    [[file('in.txt'), '--out', file('o.bin'), '--val-fraction', 'x'], /--val-fraction/],
    [[file('in.txt'), '--out', file('o.bin'), '--vocab', '3'], /unknown option --vocab/],
    [[file('in.txt'), '--out'], /--out: missing value/],
    [[file('in.txt'), '--out', path.join(dir, 'no-dir', 'o.bin')], /--out: the folder .*no-dir does not exist/],
  ]
  for (const [args, msg] of cases) {
    const { o, io } = capture()
    t.equal(await main(['tokenize', ...args], io), 2, args.join(' '))
    t.match(o.err, msg)
    t.match(o.err, /see versatile-ffn tokenize --help/)
  }
  t.notOk(fs.existsSync(file('o_train.bin')), 'nothing written')
  const { o, io } = capture()
  t.equal(await main(['tokenize', '--help'], io), 0)
  t.match(o.out, /Usage: versatile-ffn tokenize/)
})

t.test('without gpt-tokenizer installed: a VffnError saying how to install it', async (t) => {
  // a child whose module resolution hides the package, as on an install without optional dependencies
  const hide = `const M=require('module');const r=M._resolveFilename;M._resolveFilename=function(q,...a){if(/^gpt-tokenizer/.test(q)){const e=new Error('Cannot find module '+q);e.code='MODULE_NOT_FOUND';throw e}return r.call(this,q,...a)}`
  const script = `${hide};const {GPT2Tokenizer}=require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});` +
    `console.log(GPT2Tokenizer.available());try{new GPT2Tokenizer().encode('x')}catch(e){console.log(e.name,e.code,e.message)}`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /^false\nVffnError ERR_UNSUPPORTED tokenizer: .*needs the optional dependency gpt-tokenizer; install it with `npm install gpt-tokenizer`/)
})

const available = GPT2Tokenizer.available()
t.test('GPT-2 ids and round trips', { skip: available ? false : 'gpt-tokenizer is not installed (npm install gpt-tokenizer)' }, async (t) => {
  const tok = new GPT2Tokenizer()
  const ref = require('gpt-tokenizer/encoding/gpt2') as { encode(s: string, o?: object): number[]; decode(ids: number[]): string }
  const fixed = 'Hello world! VersatileFFN reuses one FFN  in width and depth.\n\nnaïve café — 東京 2026 <|endoftext|> end'
  const ids = tok.encode(fixed)
  t.same(ids, ref.encode(fixed, { disallowedSpecial: new Set() }), "the library's own encoder gives the same ids")
  t.notOk(ids.includes(GPT2_EOT), 'special-token text is plain text')
  t.ok(ids.every((i) => i >= 0 && i < tok.vocabSize))
  t.equal(tok.vocabSize, 50257)
  t.equal(tok.paddedVocabSize, 50304)
  t.equal(tok.decode(ids), fixed)
  t.equal(tok.decode(Int32Array.from(ids)), fixed, 'typed arrays decode too')
  t.throws(() => tok.decode([50257]), { code: 'ERR_ARGUMENT', message: /^ids\[0\]: / })

  // cut points never change the ids: a multi-piece encoding equals the whole text's
  const lines = Array.from({ length: 400 }, (_, i) => (i % 7 === 0 ? '' : i % 5 === 0 ? '   indented line ' + i : `Line ${i}: the quick brown fox ${'jumps '.repeat(i % 4)}`))
  const text = lines.join('\n') + '\n\n\nlast words'
  let pos = 0, pieces: number[] = []
  while (pos < text.length) {
    const c = cutPoint(text, pos + 50)
    const end = c < 0 ? text.length : c
    pieces = pieces.concat(tok.encode(text.slice(pos, end)))
    pos = end
  }
  t.same(pieces, tok.encode(text), 'pieces cut at cutPoint encode like the whole')

  // tokenize -> .bin -> dataset -> decode gives back every document, each after <|endoftext|>
  const docs = [text, 'A second document.\nWith two lines.\n', 'ünïcödé ' + '€'.repeat(300)]
  docs.forEach((d, i) => fs.writeFileSync(file(`doc${i}.txt`), d))
  const { o, io } = capture()
  const counts = runTokenize({ inputs: docs.map((_, i) => file(`doc${i}.txt`)), out: file('data.bin'), valFraction: 0.2 }, io, 64)
  t.match(o.err, /tokenize: .* MB \(100%\), \d+ tokens/, 'a progress line')
  t.match(o.out, /data_train\.bin: \d+ tokens\n.*data_val\.bin: \d+ tokens/)
  const ds = TokenDataset.open([file('data_val.bin'), file('data_train.bin')], { vocabSize: tok.vocabSize })
  t.equal(ds.tokens, counts.train + counts.val)
  t.ok(counts.val > 0 && counts.train > counts.val, `val ${counts.val}, train ${counts.train} tokens`)
  const all = Array.from(ds.read(0, ds.tokens))
  t.equal(tok.decode(all), docs.map((d) => '<|endoftext|>' + d).join(''), 'val then train decode to the documents')
  t.same(all, docs.flatMap((d) => [GPT2_EOT, ...tok.encode(d)]), 'the ids equal encoding each whole document')
  ds.close()

  // the CLI writes the same files
  const c = capture()
  t.equal(await main(['tokenize', ...docs.map((_, i) => file(`doc${i}.txt`)), '--out', file('cli.bin'), '--val-fraction', '0'], c.io), 0, c.o.err)
  t.notOk(fs.existsSync(file('cli_val.bin')), '--val-fraction 0 writes no val file')
  const one = TokenDataset.open(file('cli_train.bin'))
  t.same(Array.from(one.read(0, one.tokens)), all.length === one.tokens ? all : [], 'same ids as the API run')
  one.close()
})
