// The API reference builds from the TSDoc comments with no warning (typedoc.json treats warnings
// as errors and requires every export to be documented), so an undocumented export fails here.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(__dirname, '..')
const typedoc = join(root, 'node_modules', 'typedoc', 'bin', 'typedoc')

t.test('npm run docs: the reference builds without warnings', { skip: existsSync(typedoc) ? false : 'typedoc is not installed (npm install --include=dev)' }, async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'vffn-docs-'))
  const r = spawnSync(process.execPath, [typedoc, '--out', out], { cwd: root, encoding: 'utf8' })
  const log = (r.stdout ?? '') + (r.stderr ?? '')
  t.equal(r.status, 0, log)
  t.notMatch(log, /warning/i, 'no warnings')
  const pages = readdirSync(out, { recursive: true, encoding: 'utf8' })
  t.ok(pages.some((p) => /classes\/(index\.)?VersatileFFN\.html$/.test(p)), 'VersatileFFN has a page')
  t.ok(pages.some((p) => /documents\/SPEC\.html$/.test(p)), 'the specification is part of the reference')
  t.notOk(pages.some((p) => p.includes('_native')), '_native is not part of the documented surface')
  rmSync(out, { recursive: true, force: true })
})
