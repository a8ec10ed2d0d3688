// run as a child process under an address-space limit by test/teardown.ts: reading a tensor
// when no memory is left for the copy must reject with ERR_OOM, not end the process
import { empty, tensor } from '../../lib/index'

async function main(): Promise<void> {
  const big = empty([128 * 1024 * 1024]).fill_(1.5) // 512 MiB
  const held: Float32Array[] = []
  let code = 'none'
  for (let i = 0; i < 8 && code === 'none'; i++) {
    try {
      held.push(await big.data())
    } catch (e) {
      code = (e as { code?: string }).code ?? 'no code'
    }
  }
  console.log(`read: ${code} after ${held.length} copies`)
  held.length = 0
  big.dispose()
  const v = await tensor([1, 2, 3]).data()
  console.log(v.join() === '1,2,3' ? 'after: ok' : 'after: wrong')
}
main().catch((e) => {
  console.log(`threw: ${(e as { code?: string }).code} ${(e as Error).message}`)
  process.exit(1)
})
