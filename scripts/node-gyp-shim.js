#!/usr/bin/env node
// prebuildify only knows `node-gyp rebuild`; this stands in for node-gyp and builds with
// cmake-js instead (prebuildify --node-gyp scripts/node-gyp-shim.js). The addon and the CUDA
// backend library land in build/Release, where prebuildify collects them.
'use strict'
const path = require('path')
const { spawnSync } = require('child_process')

const args = process.argv.slice(2)
if (args[0] !== 'rebuild') {
  console.error(`node-gyp-shim: only 'rebuild' is supported, got ${args.join(' ')}`)
  process.exit(1)
}
const debug = args.includes('--debug')
const cmakeJs = require.resolve('cmake-js/bin/cmake-js')
const r = spawnSync(process.execPath, [cmakeJs, 'rebuild', ...(debug ? ['--debug'] : [])], {
  cwd: path.join(__dirname, '..'),
  stdio: 'inherit',
})
process.exit(r.status === null ? 1 : r.status)
