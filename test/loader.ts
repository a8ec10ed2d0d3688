// what a user sees when the native binary does not load: a coded error that says why and what to
// do, including the glibc floor of the prebuilt binary when the system's is older
import t from 'tap'
import { spawnSync } from 'child_process'
import * as fs from 'fs'
import * as os from 'os'
import * as path from 'path'
import { loadFailure } from '../lib/binding'

t.test('a binary that fails to load gives ERR_UNSUPPORTED with the reason and the way out', async (t) => {
  const bogus = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vffn-loader-')), 'versatile_ffn.node')
  fs.writeFileSync(bogus, 'not a shared object')
  const lib = path.join(__dirname, '..', 'lib', 'index.ts')
  const r = spawnSync(process.execPath, [...process.execArgv, '-e', `try { require(${JSON.stringify(lib)}) } catch (e) { console.log(e.code + ' ' + e.message) }`], {
    encoding: 'utf8', env: { ...process.env, VFFN_ADDON_PATH: bogus },
  })
  t.equal(r.status, 0, r.stderr.slice(-300))
  t.match(r.stdout, /^ERR_UNSUPPORTED versatile-ffn: no native binary for linux-x64 loads here \(.*(invalid ELF header|file too short).*\)\./)
  t.match(r.stdout, /npm_config_build_from_source=true npm rebuild versatile-ffn/)
  t.notMatch(r.stdout, /glibc/, 'no glibc hint when glibc is not the reason')
})

t.test('a glibc too old for the prebuilt binary is named', async (t) => {
  const e = loadFailure("/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.34' not found (required by versatile_ffn.node)")
  t.equal(e.code, 'ERR_UNSUPPORTED')
  t.match(e.message, /needs glibc >= 2\.34 and a libstdc\+\+ with GLIBCXX_3\.4\.30/)
  t.match(loadFailure("version `GLIBCXX_3.4.30' not found").message, /glibc >= 2\.34/)
})
