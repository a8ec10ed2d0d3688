// A node:http server that streams generated tokens as server-sent events through one
// GenerationEngine, and cancels a request when its client disconnects.
//
//   npx ts-node --transpile-only examples/server.ts          # listens on 127.0.0.1:8080 (PORT to change)
//   curl -N -d '{"prompt":[1,2,3],"maxNewTokens":8,"temperature":0.8,"seed":1}' http://127.0.0.1:8080/generate
//
// POST /generate takes { prompt, maxNewTokens, temperature, topK, topP, seed, stopTokens } and
// answers `data: {"token":ID}` per token, then `event: done` with every token, or `event: error`
// with the request's error code. GET /health answers ok; GET /stats the engine's and server's counts.
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
// from an installed package: import { GenerationEngine, TransformerLM, VffnError } from 'versatile-ffn'
import { GenerationEngine, TransformerLM, VffnError } from '../lib/index'

/** What the server has seen (beside the engine's own stats). */
export interface ServerCounts {
  completed: number
  cancelled: number
  failed: number
}

export interface RunningServer {
  url: string
  server: http.Server
  counts: ServerCounts
  /** stops accepting, ends open streams, closes the engine */
  close(): Promise<void>
}

const MAX_BODY = 1 << 20

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => {
      body += c
      if (body.length > MAX_BODY) reject(new Error('body too large'))
    })
    req.on('end', () => resolve(body))
    req.on('error', reject)
  })
}

async function generate(engine: GenerationEngine, counts: ServerCounts, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  let body: { prompt?: unknown } & Record<string, unknown>
  try {
    body = JSON.parse(await readBody(req))
  } catch {
    res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'ERR_ARGUMENT', message: 'expected a JSON body' }))
    return
  }
  const { prompt, ...opts } = body
  const ac = new AbortController()
  let finished = false
  // the client went away before the last event: stop its request, which frees its cache
  res.on('close', () => {
    if (!finished) ac.abort()
  })
  const r = engine.generate(prompt as number[], { ...opts, signal: ac.signal })
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
  try {
    for await (const token of r) res.write(`data: ${JSON.stringify({ token })}\n\n`)
    finished = true
    counts.completed++
    res.end(`event: done\ndata: ${JSON.stringify({ tokens: Array.from(await r.result) })}\n\n`)
  } catch (e) {
    finished = true
    const err = e as VffnError
    if (err.code === 'ERR_ABORTED') counts.cancelled++
    else counts.failed++
    if (!res.destroyed) res.end(`event: error\ndata: ${JSON.stringify({ code: err.code, message: err.message })}\n\n`)
  }
}

/** Starts the server for `engine` on host:port (port 0: any free one). */
export function startServer(engine: GenerationEngine, { host = '127.0.0.1', port = 0 } = {}): Promise<RunningServer> {
  const counts: ServerCounts = { completed: 0, cancelled: 0, failed: 0 }
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/generate') void generate(engine, counts, req, res)
    else if (req.method === 'GET' && req.url === '/health') res.end('ok')
    else if (req.method === 'GET' && req.url === '/stats') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ...engine.stats(), ...counts }))
    else res.writeHead(404).end()
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      const { port: p } = server.address() as AddressInfo
      resolve({
        url: `http://${host}:${p}`, server, counts,
        async close() {
          const closed = new Promise<void>((r) => server.close(() => r()))
          // idle keep-alive sockets would hold close() open
          server.closeIdleConnections()
          await engine.close({ cancel: true })
          server.closeAllConnections()
          await closed
        },
      })
    })
  })
}

if (require.main === module) {
  const model = new TransformerLM({ ...TransformerLM.config('small'), ffn: 'versatile', seed: 1 })
  const engine = new GenerationEngine(model, { maxBatch: 32 })
  void startServer(engine, { port: Number(process.env.PORT ?? 8080) }).then((s) => {
    process.stdout.write(`listening on ${s.url} (POST /generate, GET /health, GET /stats)\n`)
    process.once('SIGINT', () => void s.close().then(() => model.dispose()))
  })
}
