// crash cases run in a child process, so a crash is a failed test and not a dead runner:
// worker threads terminated (or exiting) at many moments with reads, syncs and many small ops
// pending; a native bounds check fed sizes near 2^62; data() when memory runs out.
import t from 'tap'
import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as path from 'path'

// the worker scripts load the compiled package (dist/, built by npm install), so forty workers
// start in seconds; a dist/ older than lib/ would test old code
const root = path.join(__dirname, '..')
const newest = (dir: string): number =>
  Math.max(...fs.readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newest(path.join(dir, e.name)) : fs.statSync(path.join(dir, e.name)).mtimeMs)))
const distIndex = path.join(root, 'dist', 'index.js')
t.ok(fs.existsSync(distIndex) && fs.statSync(distIndex).mtimeMs >= newest(path.join(root, 'lib')), 'dist/ is built from the current lib/ (npm run build:ts)')

const run = (script: string, env: Record<string, string> = {}, prefix: string[] = []) => {
  const args = [...process.execArgv, path.join(__dirname, 'helpers', script)]
  const cmd = prefix.length ? prefix[0] : process.execPath
  const full = prefix.length ? [...prefix.slice(1), process.execPath, ...args] : args
  return spawnSync(cmd, full, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 240_000 })
}

t.test('workers ending with waits pending never harm the process', async (t) => {
  const r = run('teardown-driver.ts')
  t.equal(r.signal, null, `no signal (stderr: ${r.stderr.slice(-400)})`)
  t.equal(r.status, 0, 'exit code 0')
  t.match(r.stdout, /teardown: 40 workers ended with waits pending; main thread fine/)
})

t.test('workers that alone loaded the addon can end with work queued', async (t) => {
  const r = run('teardown-fresh.ts')
  t.equal(r.signal, null, `no signal (stderr: ${r.stderr.slice(-400)})`)
  t.equal(r.status, 0, 'exit code 0')
  t.match(r.stdout, /teardown-fresh: 12 workers ended; the process is fine/)
})

t.test('malformed tensors reach no native memory: overflowing sizes are argument errors', async (t) => {
  const r = run('overflow.ts')
  t.equal(r.signal, null, `no signal (stderr: ${r.stderr.slice(-400)})`)
  t.equal(r.status, 0)
  const lines = r.stdout.trim().split('\n')
  t.ok(lines.length >= 6, `${lines.length} cases`)
  for (const l of lines) t.match(l, /: ERR_ARGUMENT /, l)
})

t.test('data() under memory pressure rejects with ERR_OOM instead of aborting', async (t) => {
  // 3 GiB of address space: enough for node and a 512 MiB tensor, not for a second 512 MiB copy
  // and a third
  const r = run('oom-read.ts', {}, ['prlimit', '--as=3221225472'])
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return t.skip('prlimit is not installed')
  t.equal(r.signal, null, `no signal (stderr: ${r.stderr.slice(-400)})`)
  t.equal(r.status, 0)
  t.match(r.stdout, /read: ERR_OOM/)
  t.match(r.stdout, /after: ok/, 'the process keeps working')
})
