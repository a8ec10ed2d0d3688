// `versatile-ffn bench serve`: JSON with every figure for each model and concurrency, the chart,
// the table's goal line, and usage errors with exit code 2.
import t from 'tap'
import { existsSync, readFileSync, unlinkSync } from 'fs'
import { tmpdir } from 'os'
import { join } from 'path'
import { main } from '../lib/cli'

const io = () => {
  const out = { stdout: '', stderr: '' }
  return { out, io: { stdout: { write: (s: string) => void (out.stdout += s) }, stderr: { write: (s: string) => void (out.stderr += s) } } }
}

t.test('JSON: tokens/s, ttft, itl and event-loop figures per model and concurrency', async (t) => {
  const chart = join(tmpdir(), `vffn-serve-${process.pid}.svg`)
  t.teardown(() => existsSync(chart) && unlinkSync(chart))
  const { out, io: x } = io()
  const code = await main(['bench', 'serve', '--config', 'tiny', '--concurrency', '1,3', '--new-tokens', '5', '--prompt', '6', '--device', 'cpu', '--json', '--chart', chart, '--reps', '2'], x)
  t.equal(code, 0, out.stderr)
  const r = JSON.parse(out.stdout) as { dtype: string; weightBytes: number; cases: Record<string, number | string>[] }
  t.equal(r.dtype, 'float32', 'float32 weights by default')
  t.same(r.cases.map((c) => [c.ffn, c.concurrency, c.tokens]), [['versatile', 1, 5], ['versatile', 3, 15], ['dense', 1, 5], ['dense', 3, 15]], 'every request made all its tokens')
  for (const c of r.cases)
    for (const k of ['tokensPerSecond', 'decodeTokensPerSecond', 'ttftMsP50', 'ttftMsP99', 'itlMsP50', 'itlMsP99', 'loopDelayMsP99'])
      t.ok(typeof c[k] === 'number' && Number.isFinite(c[k] as number) && (c[k] as number) > 0, `${c.ffn} x${c.concurrency}: ${k} = ${c[k]}`)
  t.same(r.cases.map((c) => c.runs), [2, 2, 2, 2], 'each figure is the median of 2 runs')
  t.match(readFileSync(chart, 'utf8'), /^<svg[^]*versatile x3[^]*tok\/s/, 'the chart names each case')
})

t.test('the table and usage errors', async (t) => {
  const { out, io: x } = io()
  t.equal(await main(['bench', 'serve', '--config', 'tiny', '--concurrency', '1,2', '--new-tokens', '3', '--ffn', 'dense'], x), 0)
  t.match(out.stdout, /dense: 2 concurrent give [\d.]+x the tokens\/s of one at a time \(decoding: [\d.]+x\)/)
  for (const bad of [['--concurrency', '0'], ['--ffn', 'wide'], ['--config', 'huge'], ['--reps', '0'], ['--nope']]) {
    const b = io()
    t.equal(await main(['bench', 'serve', ...bad], b.io), 2, bad.join(' '))
    t.match(b.out.stderr, /bench serve: .*\n\(see versatile-ffn bench serve --help\)/)
  }
  const bf = io()
  t.equal(await main(['bench', 'serve', '--config', 'tiny', '--concurrency', '1', '--new-tokens', '3', '--ffn', 'dense', '--dtype', 'bfloat16', '--json', '--reps', '1'], bf.io), 0, bf.out.stderr)
  const f32 = io()
  t.equal(await main(['bench', 'serve', '--config', 'tiny', '--concurrency', '1', '--new-tokens', '3', '--ffn', 'dense', '--json', '--reps', '1'], f32.io), 0, f32.out.stderr)
  const [rb, rf] = [JSON.parse(bf.out.stdout), JSON.parse(f32.out.stdout)] as { dtype: string; weightBytes: number; cases: { tokens: number }[] }[]
  t.equal(rb.dtype, 'bfloat16')
  t.equal(rb.weightBytes * 2, rf.weightBytes, '--dtype bfloat16: half the weight bytes')
  t.equal(rb.cases[0].tokens, 3, 'and every token made')
  const dt = io()
  t.equal(await main(['bench', 'serve', '--dtype', 'float16'], dt.io), 2)
  t.match(dt.out.stderr, /--dtype: expected float32 or bfloat16, got "float16"/)
  const cfg = io()
  t.equal(await main(['bench', 'serve', '--config', '354m'], cfg.io), 2, 'config names are exact')
  t.match(cfg.out.stderr, /--config: expected tiny, small or 354M, got "354m"/)
  const both = io()
  t.equal(await main(['bench', 'serve', '--config', 'tiny', '--concurrency', '1', '--new-tokens', '3', '--ffn', 'dense', '--steps', 'recorded,op-by-op'], both.io), 0)
  t.match(both.out.stdout, /dense x1: recorded steps give [\d.]+x the tokens\/s of op by op/)
  t.match(both.out.stdout, /weights [\d.]+ MiB; memory bandwidth [\d.]+ GB\/s[^]*dense \(op-by-op\): batch-1 decoding [\d.]+ ms per token/)
  const bad = io()
  t.equal(await main(['bench', 'serve', '--steps', 'fast'], bad.io), 2)
  t.match(bad.out.stderr, /--steps: expected recorded and\/or op-by-op/)
  const h = io()
  t.equal(await main(['bench', 'serve', '--help'], h.io), 0)
  t.match(h.out.stdout, /--concurrency A,B/)
})
