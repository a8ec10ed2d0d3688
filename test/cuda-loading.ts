// the CUDA loading path, on every machine: without a driver or GPU, cuda.available() is false with
// a readable reason, CUDA tensors throw ERR_CUDA_UNAVAILABLE and nothing crashes; with one, a
// round trip works. the backend library itself must depend on no CUDA shared library.
import t from 'tap'
import * as fs from 'fs'
import * as path from 'path'
import { spawnSync } from 'child_process'
import { cuda, tensor, zeros, matmul } from '../lib/index'

const root = path.join(__dirname, '..')

function addonPath(): string {
  if (process.env.VFFN_ADDON_PATH) return path.resolve(process.env.VFFN_ADDON_PATH)
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return (require('node-gyp-build') as { path(dir: string): string }).path(root)
}

// DT_NEEDED entries of an ELF64 little-endian shared library, read from its dynamic section
function neededLibraries(file: string): string[] {
  const b = fs.readFileSync(file)
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new Error(`${file}: not an ELF64 little-endian file`)
  const shoff = Number(b.readBigUInt64LE(0x28))
  const shentsize = b.readUInt16LE(0x3a)
  const shnum = b.readUInt16LE(0x3c)
  const section = (i: number) => {
    const o = shoff + i * shentsize
    return { type: b.readUInt32LE(o + 4), offset: Number(b.readBigUInt64LE(o + 0x18)), size: Number(b.readBigUInt64LE(o + 0x20)), link: b.readUInt32LE(o + 0x28) }
  }
  const out: string[] = []
  for (let i = 0; i < shnum; i++) {
    const s = section(i)
    if (s.type !== 6) continue // SHT_DYNAMIC
    const strtab = section(s.link)
    for (let o = s.offset; o + 16 <= s.offset + s.size; o += 16) {
      const tag = b.readBigInt64LE(o)
      if (tag === 0n) break // DT_NULL
      if (tag !== 1n) continue // DT_NEEDED
      const start = strtab.offset + Number(b.readBigUInt64LE(o + 8))
      out.push(b.toString('latin1', start, b.indexOf(0, start)))
    }
  }
  return out
}

const lib = path.join(path.dirname(addonPath()), 'libvffn_cuda.so')
const noLibrary = fs.existsSync(lib) ? false : 'no CUDA backend library beside the addon: this build had no nvcc'

// names of the defined dynamic symbols (.dynsym) of an ELF64 little-endian shared library
function exportedSymbols(file: string): Set<string> {
  const b = fs.readFileSync(file)
  const shoff = Number(b.readBigUInt64LE(0x28)), shentsize = b.readUInt16LE(0x3a), shnum = b.readUInt16LE(0x3c)
  const section = (i: number) => {
    const o = shoff + i * shentsize
    return { type: b.readUInt32LE(o + 4), offset: Number(b.readBigUInt64LE(o + 0x18)), size: Number(b.readBigUInt64LE(o + 0x20)), link: b.readUInt32LE(o + 0x28) }
  }
  const out = new Set<string>()
  for (let i = 0; i < shnum; i++) {
    const s = section(i)
    if (s.type !== 11) continue // SHT_DYNSYM
    const strtab = section(s.link)
    for (let o = s.offset; o + 24 <= s.offset + s.size; o += 24) {
      if (b.readUInt16LE(o + 6) === 0) continue // undefined (imported)
      const start = strtab.offset + b.readUInt32LE(o)
      out.add(b.toString('latin1', start, b.indexOf(0, start)))
    }
  }
  return out
}

const napiDir = path.join(root, 'native', 'napi')
t.test('every op the addon sends to CUDA is exported by the backend library', {
  skip: noLibrary || (fs.existsSync(napiDir) ? false : 'no native sources beside the tests (a bundled copy)'),
}, async (t) => {
  // the op names come from the napi sources (cuda_call(dev, "name", ...) and `const char* op = ...`
  // choices), so a new CPU op without a CUDA twin shows up here
  const napi = napiDir
  const src = fs.readdirSync(napi).filter((n) => n.endsWith('.cpp')).map((f) => fs.readFileSync(path.join(napi, f), 'utf8')).join('\n')
  const called = new Set<string>()
  for (const m of src.matchAll(/cuda_call\(dev, "([a-z_]+)"/g)) called.add(m[1])
  for (const m of src.matchAll(/const char\* op = ([^;]*);/g)) for (const q of m[1].matchAll(/"([a-z_]+)"/g)) called.add(q[1])
  t.ok(called.has('gemm') && called.has('rope_forward') && called.has('versatile_backward'), `ops found in the napi sources: ${[...called].join(', ')}`)
  const syms = exportedSymbols(lib)
  t.ok(syms.has('vffn_cuda_get_api'), 'vffn_cuda_get_api is exported')
  for (const op of called) t.ok(syms.has(`vffn_cuda_${op}`), `vffn_cuda_${op} is exported`)
  // hidden visibility: nothing else of the library leaks into the process's symbol space
  const stray = [...syms].filter((s) => !s.startsWith('vffn_cuda_') && !s.startsWith('_') && s !== '')
  t.same(stray, [], 'no other exported symbols')
})

t.test('the CUDA backend library links no CUDA shared library', { skip: noLibrary }, async (t) => {
  const needed = neededLibraries(lib)
  t.ok(needed.some((n) => n.startsWith('libc.so')), `DT_NEEDED was read (${needed.join(', ')})`)
  // the static runtime loads the driver itself at run time; linking any of these would make
  // dlopen fail on machines without CUDA, instead of a clean "unavailable"
  for (const n of needed) t.notMatch(n, /^lib(cudart|cublas|cublasLt|cuda|nvrtc|cudnn|nvJitLink)\b/, `depends on ${n}`)
})

const hasGpu = cuda.available()

t.test('without a usable GPU: unavailable, with a reason, and nothing crashes', {
  skip: hasGpu ? `CUDA is available here (${cuda.deviceCount()} device(s)): the unavailable path cannot be provoked` : false,
}, async (t) => {
  const reason = cuda.reason()
  t.type(reason, 'string')
  t.ok(reason.length > 0, `reason: ${reason}`)
  t.equal(cuda.deviceCount(), 0)
  t.throws(() => tensor([1, 2, 3], undefined, { device: 'cuda' }), { code: 'ERR_CUDA_UNAVAILABLE', message: /CUDA is not available: .+/ })
  t.throws(() => zeros([4, 4], { device: 'cuda:0' }), { code: 'ERR_CUDA_UNAVAILABLE' })
  const x = tensor([[1, 2], [3, 4]])
  t.throws(() => x.to('cuda'), { code: 'ERR_CUDA_UNAVAILABLE' })
  // the reason is stable and the process goes on computing on the CPU
  t.equal(cuda.reason(), reason)
  t.same(Array.from(await matmul(x, x).data()), [7, 10, 15, 22])
})

t.test('a fresh process asking for CUDA first thing exits normally', async (t) => {
  // the first CUDA call loads the library and probes the driver: a crash there would kill the process
  const script = `
    const b = require(${JSON.stringify(addonPath())});
    const info = b.cudaInfo();
    let code = 'none';
    if (!info.available) { try { b.alloc(1, 0, 64) } catch (e) { code = e.code } }
    console.log(JSON.stringify({ info, code }));`
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000, env: process.env })
  t.equal(r.status, 0, `exit status (stderr: ${r.stderr})`)
  t.equal(r.signal, null)
  const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { info: { available: boolean; reason: string }; code: string }
  if (out.info.available) t.equal(out.code, 'none')
  else {
    t.ok(out.info.reason.length > 0, `reason: ${out.info.reason}`)
    t.equal(out.code, 'ERR_CUDA_UNAVAILABLE')
  }
})

t.test('with a GPU: a round trip through device memory', { skip: hasGpu ? false : `no GPU: ${cuda.reason()}` }, async (t) => {
  const host = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 100)
  const d = tensor(host, [10, 100], { device: 'cuda' })
  t.same(Array.from(await d.data()), Array.from(host))
  const back = d.to('cpu')
  t.same(Array.from(await back.data()), Array.from(host))
})
