import * as path from 'path'
import type { Binding } from '../binding'
import { VffnError } from './errors'

function load(): Binding {
  // VFFN_ADDON_PATH points at an addon built elsewhere (a second build folder while developing)
  const explicit = process.env.VFFN_ADDON_PATH
  try {
    if (explicit) return require(path.resolve(explicit)) as Binding
    // loaded only here: a bundle that names its addon (the GPU check's) carries no node-gyp-build
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const gypBuild = require('node-gyp-build') as (dir: string) => Binding
    return gypBuild(path.join(__dirname, '..'))
  } catch (e) {
    throw loadFailure((e as Error).message)
  }
}

/** @internal the error for a native binary that does not load, saying what to do about it */
export function loadFailure(message: string): VffnError {
  const why = message.split('\n')[0]
  // the prebuilt binary is linked against glibc 2.34 and libstdc++ with GLIBCXX_3.4.30 (Debian 12, Ubuntu 22.04)
  const libc = /GLIBC(XX)?_[0-9.]+/.test(why)
    ? ' The prebuilt binary needs glibc >= 2.34 and a libstdc++ with GLIBCXX_3.4.30; this system\'s are older, so build from source.'
    : ''
  return new VffnError(
    'ERR_UNSUPPORTED',
    `versatile-ffn: no native binary for ${process.platform}-${process.arch} loads here (${why}).${libc} ` +
      'Build one from source: allow the package\'s install script (npm install-scripts approve versatile-ffn) and run ' +
      '`npm_config_build_from_source=true npm rebuild versatile-ffn`; this needs CMake and a C++17 compiler.',
  )
}

/**
 * The raw native module. Native code makes its errors as VffnError (setErrorClass), so its
 * functions are called directly, without a JS wrapper on every op.
 */
export const native: Binding = (() => {
  const b = load()
  b.setErrorClass(VffnError)
  return b
})()
