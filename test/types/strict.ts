// Compiled with `tsc --strict --noEmit` by test/types.ts against the built declarations (dist/):
// what a strict TypeScript user sees. Every @ts-expect-error line must stay an error.
import { inspect } from 'node:util'
import { DenseFFN, LMOutput, MoEStats, Tensor, TransformerLM, VersatileFFN, VersatileStats, randn, tensor, zeros } from 'versatile-ffn'

async function main(): Promise<void> {
  const ids = tensor(new Int32Array([1, 2, 3]))
  const i32: Int32Array = await ids.data()
  // @ts-expect-error an int32 tensor's values are not a Float32Array
  const wrong: Float32Array = await ids.data()

  const x = randn([2, 3])
  const f32: Float32Array = await x.data()
  // @ts-expect-error a float tensor's values are not an Int32Array
  const wrong2: Int32Array = await x.data()

  const z: Tensor<'int32'> = zeros([4], { dtype: 'int32' })
  const bf: Tensor<'bfloat16'> = x.astype('bfloat16')
  const bfv: Float32Array = await bf.data()
  const anyT: Tensor = z
  // @ts-expect-error a tensor of unknown dtype resolves with either array
  const wrong3: Float32Array = await anyT.data()
  const either: Float32Array | Int32Array = await anyT.data()
  const viaFloat: Float32Array = await anyT.floatData()
  const viaInt: Int32Array = await anyT.intData()

  const ffn = new VersatileFFN({ dModel: 8 })
  const out = ffn.forward(randn([2, 4, 8]))
  const loops: Int32Array = await out.stats.loops.data()
  const lambda: Float32Array = await out.stats.lambda.data()
  const y: Float32Array = await out.y.data()
  // @ts-expect-error experts are int32
  const wrong4: Float32Array = await out.stats.experts.data()
  const dense = new DenseFFN({ dModel: 8 })
  // @ts-expect-error dModel is required
  new DenseFFN({ hidden: 32 })

  const model = new TransformerLM({ ...TransformerLM.config('tiny'), ffn: 'versatile' })
  const lm: LMOutput = model.forward(tensor(new Int32Array([1, 2]), [1, 2]))
  const st: VersatileStats | MoEStats | undefined = lm.stats[0]
  // @ts-expect-error a layer's stats may be undefined (a dense layer)
  const wrong5: VersatileStats = lm.stats[0]
  if (st && 'loops' in st) {
    const l: Int32Array = await st.loops.data()
    void l
  }
  const logits: Float32Array = await lm.logits.data()
  const shown: string = inspect(x)
  void [i32, wrong, f32, wrong2, bfv, wrong3, either, viaFloat, viaInt, loops, lambda, y, wrong4, dense, wrong5, logits, shown]
}
void main
