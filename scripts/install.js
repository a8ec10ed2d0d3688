#!/usr/bin/env node
// npm install: use a prebuilt binary when one fits this machine, else build with cmake-js.
// `npm install --build-from-source` (or VFFN_BUILD_FROM_SOURCE=1) always builds.
// In a checkout of the repository (tsconfig.json beside lib/) it also compiles the TypeScript into
// dist/; a packed package ships dist/ and no tsconfig.json, so nothing is compiled there. (This is
// not a `prepare` script because npm would ship it in the tarball, where it cannot run.)
'use strict'
const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const root = path.join(__dirname, '..')
const env = process.env
const fromSource =
  env.npm_config_build_from_source === 'true' ||
  env.VFFN_BUILD_FROM_SOURCE === '1' ||
  (env.npm_config_build_from_source || '').split(',').includes('versatile-ffn')

function prebuiltLoads() {
  try {
    const file = require('node-gyp-build').path(root)
    require(file)
    console.log(`versatile-ffn: using ${path.relative(root, file)}`)
    return true
  } catch (e) {
    return false
  }
}

function run(args) {
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' })
  return r.status === null ? 1 : r.status
}

function buildTypeScript() {
  if (!fs.existsSync(path.join(root, 'tsconfig.json')) || !fs.existsSync(path.join(root, 'lib'))) return 0
  let tsc
  try {
    tsc = require.resolve('typescript/bin/tsc', { paths: [root] })
  } catch (e) {
    console.error('versatile-ffn: this checkout needs its devDependencies (typescript) to compile lib/ into dist/: run npm install without --omit=dev')
    return 1
  }
  console.log('versatile-ffn: compiling the TypeScript (tsc -p tsconfig.json)')
  return run([tsc, '-p', 'tsconfig.json'])
}

let status = 0
if (fromSource || !prebuiltLoads()) {
  console.log(`versatile-ffn: ${fromSource ? 'building from source as asked' : 'no prebuilt binary fits; building from source'} (cmake-js)`)
  status = run([require.resolve('cmake-js/bin/cmake-js'), 'compile'])
}
if (status === 0) status = buildTypeScript()
process.exit(status)
