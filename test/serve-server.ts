// examples/server.ts end to end over loopback: 16 concurrent streamed requests (ragged prompts,
// mixed options) each equal to the same request run alone, one client disconnecting mid-stream
// (its request cancelled, its cache freed), a bad request failing alone, a clean shutdown.
import t from 'tap'
import { GenerationEngine, RequestOptions, TransformerLM } from '../lib/index'
import { startServer } from '../examples/server'

const model = new TransformerLM({ ...TransformerLM.config('tiny'), ffn: 'versatile', seed: 4 })

interface Streamed { tokens: number[]; done?: number[]; error?: { code: string } }

// reads server-sent events until the stream ends, or until `stopAfter` tokens (then disconnects)
async function stream(url: string, body: object, stopAfter = Infinity): Promise<Streamed> {
  const ac = new AbortController()
  const res = await fetch(`${url}/generate`, { method: 'POST', body: JSON.stringify(body), signal: ac.signal })
  const reader = res.body!.getReader()
  const dec = new TextDecoder()
  const out: Streamed = { tokens: [] }
  let buf = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return out
    buf += dec.decode(value, { stream: true })
    let cut
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, cut)
      buf = buf.slice(cut + 2)
      const data = JSON.parse(ev.slice(ev.indexOf('data: ') + 6))
      if (ev.startsWith('event: done')) out.done = data.tokens
      else if (ev.startsWith('event: error')) out.error = data
      else out.tokens.push(data.token)
      if (out.tokens.length >= stopAfter) {
        ac.abort()
        await reader.cancel().catch(() => undefined)
        return out
      }
    }
  }
}

const stats = async (url: string) => (await (await fetch(`${url}/stats`)).json()) as { usedBlocks: number; running: number; cancelled: number; completed: number; failed: number }

t.test('16 concurrent streams equal their requests alone; a disconnect cancels and frees; clean shutdown', async (t) => {
  const engine = new GenerationEngine(model, { maxBatch: 32, maxTokens: 2048 })
  const srv = await startServer(engine, { host: '127.0.0.1', port: 0 })
  t.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  const reqs: { prompt: number[]; o: RequestOptions }[] = Array.from({ length: 16 }, (_, i) => ({
    prompt: Array.from({ length: 1 + ((i * 5) % 23) }, (_, j) => (i * 17 + j * 3) % 256),
    o: i % 3 === 0 ? { maxNewTokens: 4 + (i % 7) } : { maxNewTokens: 4 + (i % 7), temperature: 0.5 + (i % 4) * 0.3, topK: i % 2 ? 10 : 0, topP: i % 4 === 1 ? 0.8 : 1, seed: 100 + i },
  }))
  const alone: number[][] = []
  for (const r of reqs) {
    const e = new GenerationEngine(model, { maxBatch: 1, maxTokens: 64 })
    alone.push(Array.from(await e.generate(r.prompt, r.o).result))
    await e.close()
  }
  const leaving = stream(srv.url, { prompt: [5, 6, 7], maxNewTokens: 100 }, 3)
  const bad = stream(srv.url, { prompt: [1, 9999], maxNewTokens: 4 })
  const got = await Promise.all(reqs.map((r) => stream(srv.url, { prompt: r.prompt, ...r.o })))
  got.forEach((g, i) => {
    t.same(g.tokens, alone[i], `request ${i} (prompt ${reqs[i].prompt.length}, ${reqs[i].o.temperature ? 'sampled' : 'greedy'}) streams what it gives alone`)
    t.same(g.done, alone[i], `request ${i}: the done event carries the same tokens`)
  })
  const left = await leaving
  t.equal(left.tokens.length, 3, 'the leaving client read 3 tokens, then disconnected')
  t.equal((await bad).error?.code, 'ERR_ARGUMENT', 'a bad request gets an error event with its code')
  // the cancellation lands at the engine's next step: poll a bounded number of times
  let s = await stats(srv.url)
  for (let i = 0; i < 200 && (s.cancelled < 1 || s.running > 0); i++) {
    await new Promise((r) => setTimeout(r, 10))
    s = await stats(srv.url)
  }
  t.equal(s.cancelled, 1, 'the disconnected request was cancelled')
  t.equal(s.completed, 16, 'the others completed')
  t.equal(s.failed, 1, 'only the bad request failed')
  t.equal(s.usedBlocks, 0, 'its cache is back in the pool')
  t.equal(await (await fetch(`${srv.url}/health`)).text(), 'ok')
  await srv.close()
  t.equal(srv.server.listening, false, 'the server stopped listening')
  await t.rejects(engine.generate([1]).result, { code: 'ERR_CLOSED' }, 'the engine is closed')
})
