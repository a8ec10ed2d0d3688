#!/usr/bin/env node
// npm install: use a prebuilt binary when one fits this machine, else build with cmake-js.
// `npm install --build-from-source` (or VFFN_BUILD_FROM_SOURCE=1) always builds.
'use strict'
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

if (!fromSource && prebuiltLoads()) process.exit(0)
console.log(`versatile-ffn: ${fromSource ? 'building from source as asked' : 'no prebuilt binary fits; building from source'} (cmake-js)`)
const cmakeJs = require.resolve('cmake-js/bin/cmake-js')
const r = spawnSync(process.execPath, [cmakeJs, 'compile'], { cwd: root, stdio: 'inherit' })
process.exit(r.status === null ? 1 : r.status)
