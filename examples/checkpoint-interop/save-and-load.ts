// Checkpoint interop, JavaScript side: writes a VersatileFFN's weights with saveSafetensors (float32
// and bfloat16), reads them back with loadSafetensors and checks every value is unchanged, then
// prints a per-tensor summary that read.py reproduces from the same file with Python's libraries.
// Run: npx ts-node --transpile-only examples/checkpoint-interop/save-and-load.ts [folder]
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { VersatileFFN, loadSafetensors, saveSafetensors } from 'versatile-ffn'

async function main(): Promise<void> {
  const dir = process.argv[2] ?? mkdtempSync(join(tmpdir(), 'vffn-interop-'))
  const ffn = new VersatileFFN({ dModel: 32, seed: 5 })
  const path = join(dir, 'ffn.safetensors')
  await saveSafetensors(path, ffn.stateDict(), { metadata: { note: 'a VersatileFFN, D=32' } })
  await saveSafetensors(join(dir, 'ffn-bf16.safetensors'), ffn.stateDict(), { dtype: 'bfloat16' })

  const { tensors, metadata } = await loadSafetensors(path)
  let mismatches = 0
  for (const [name, p] of ffn.namedParameters()) {
    const stored = tensors.get(name)!
    const back = stored.data
    const orig = await p.floatData()
    if (stored.shape.join() !== p.shape.join() || back.some((v, i) => !Object.is(v, orig[i]))) mismatches++
    let sum = 0
    for (const v of orig) sum += v
    // the summary read.py prints too: name, dtype, shape, sum of the values
    console.log(`tensor ${name} ${stored.dtype} [${stored.shape.join(', ')}] sum ${sum.toFixed(6)}`)
  }
  console.log(`metadata note: ${metadata.note}`)
  console.log(`round trip: ${mismatches === 0 ? 'bit-exact' : `${mismatches} tensors differ`}`)
  console.log(`file: ${path}`)
  ffn.dispose()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
