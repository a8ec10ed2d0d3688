// The published types as a strict TypeScript user compiles them: test/types/strict.ts must compile
// under --strict against dist/ (the declarations the package ships), with every @ts-expect-error
// still an error; and a file with a type error must fail, so the check is not vacuous.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync, copyFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

const root = resolve(__dirname, '..')
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

// a scratch project where `versatile-ffn` resolves to this package, as it would once installed
function project(source: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'vffn-types-'))
  mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true })
  symlinkSync(root, join(dir, 'node_modules', 'versatile-ffn'))
  symlinkSync(join(root, 'node_modules', '@types', 'node'), join(dir, 'node_modules', '@types', 'node'))
  writeFileSync(join(dir, 'main.ts'), source)
  return dir
}
function compile(dir: string) {
  const r = spawnSync(process.execPath, [tsc, '--strict', '--noEmit', '--target', 'es2022', '--module', 'commonjs',
    '--moduleResolution', 'node', '--types', 'node', '--skipLibCheck', join(dir, 'main.ts')], { encoding: 'utf8', cwd: dir })
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') }
}

t.test('test/types/strict.ts compiles under --strict; every @ts-expect-error is an error', async (t) => {
  const dir = project('')
  copyFileSync(join(root, 'test', 'types', 'strict.ts'), join(dir, 'main.ts'))
  const r = compile(dir)
  t.equal(r.status, 0, r.out || 'no diagnostics')
  rmSync(dir, { recursive: true, force: true })
})

t.test('a type error is reported (the check can fail)', async (t) => {
  const dir = project(`import { tensor } from 'versatile-ffn'\nasync function f() { const v: Float32Array = await tensor(new Int32Array([1])).data(); void v }\nvoid f\n`)
  const r = compile(dir)
  t.not(r.status, 0, 'tsc fails')
  t.match(r.out, /Int32Array/, 'naming the mismatch')
  rmSync(dir, { recursive: true, force: true })
})
