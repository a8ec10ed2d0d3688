// the paper's baselines on CUDA against the CPU (the oracle) on fresh random data: MoEFFN forward,
// stats, balance loss and backward, LoopFFN forward and backward, float32 and bfloat16 weights.
// without a GPU every test skips and says why.
import t, { Test } from 'tap'
import { LoopFFN, MoEFFN, Tensor, cuda, tensor } from '../lib/index'
import { freshData } from './helpers/fresh'
import { relErr } from './helpers/data'

const SKIP = cuda.available() ? false : `no GPU here, CUDA ops cannot run: ${cuda.reason()}`
const data = freshData(7000)
const fresh = (n: number, scale = 1) => data.fresh(n, scale)

// ‖got − want‖ / ‖want‖ in float64; NaN anywhere (an unwritten output) is Infinity

async function close(t: Test, got: Tensor, want: Tensor, tol: number, what: string) {
  const e = relErr(await got.floatData(), await want.floatData())
  t.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} <= ${tol} (seed ${data.seed})`)
}

// layers chain tensor-core GEMMs (tf32 for float32 weights, bf16 inputs for bfloat16 weights,
// ~3e-3 each): 2 per forward FFN, up to 5 per backward, k loops deep for LoopFFN
const TOL_LAYER = 1e-2

t.test('MoEFFN forward and backward, edge shapes included', { skip: SKIP }, async (t) => {
  const cases = [
    { name: 'one token', T: 1, N: 4, K: 2, D: 32, E: 16 },
    { name: 'ragged', T: 77, N: 8, K: 2, D: 64, E: 24 },
    { name: 'K = N', T: 40, N: 3, K: 3, D: 48, E: 20 },
    { name: 'every token on expert 2 (others empty)', T: 50, N: 4, K: 1, D: 32, E: 16, expert: 2 },
  ]
  for (const cs of cases)
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const opts = { dModel: cs.D, experts: cs.N, topK: cs.K, expertHidden: cs.E, balanceLossWeight: 0.01, dtype, seed: 5 }
      const c = new MoEFFN({ ...opts, device: 'cpu' }), d = new MoEFFN({ ...opts, device: 'cuda' })
      const xs = fresh(cs.T * cs.D)
      const sd: Record<string, Float32Array> = {}
      for (const [name, p] of c.namedParameters()) sd[name] = await p.floatData()
      if (cs.expert !== undefined) {
        // a constant first feature and a large router weight on it make one expert win for every token
        for (let i = 0; i < cs.T; i++) xs[i * cs.D] = 4
        sd['expert_gate.weight'][cs.expert * cs.D] = 50
      }
      c.loadStateDict(sd)
      d.loadStateDict(sd)
      const x = tensor(xs, [cs.T, cs.D])
      const what = `${cs.name} ${dtype}`
      for (const train of [false, true]) {
        const oc = train ? c.forward(x, { train: true }) : c.forward(x)
        const od = train ? d.forward(x.to('cuda'), { train: true }) : d.forward(x.to('cuda'))
        // routing is piecewise constant: logits within rounding of each other may pick differently;
        // the outputs and gradients are compared only when every token was routed alike
        const [ec, ed] = [await oc.stats.experts.intData(), await od.stats.experts.intData()]
        const same = ec.every((v, i) => v === ed[i])
        let differ = 0
        for (let i = 0; i < cs.T; i++) if (ec.subarray(i * cs.K, (i + 1) * cs.K).some((v, k) => v !== ed[i * cs.K + k])) differ++
        t.ok(differ <= Math.floor(cs.T / 64), `${what}: routing differs on ${differ}/${cs.T} tokens`)
        if (cs.expert !== undefined) t.same(Array.from(ed), new Array(cs.T).fill(cs.expert), 'all on one expert')
        if (!same) continue
        await close(t, od.y, oc.y, TOL_LAYER, `${what} ${train ? 'training' : 'inference'}: y`)
        await close(t, od.stats.weights, oc.stats.weights, TOL_LAYER, `${what}: routing weights`)
        t.same(await od.stats.expertCounts.intData(), await oc.stats.expertCounts.intData(), `${what}: expert counts`)
        if (!train) continue
        const rc = oc as ReturnType<MoEFFN['forward']> & { auxLoss: Tensor }, rd = od as typeof rc
        await close(t, rd.auxLoss, rc.auxLoss, TOL_LAYER, `${what}: balance loss`)
        const dy = tensor(fresh(cs.T * cs.D), [cs.T, cs.D])
        await close(t, d.backward(rd as never, dy.to('cuda')), c.backward(rc as never, dy), TOL_LAYER, `${what}: dx`)
        for (const name of Object.keys(c.grads)) await close(t, d.grads[name], c.grads[name], TOL_LAYER, `${what}: grad ${name}`)
      }
      c.dispose()
      d.dispose()
    }
})

t.test('LoopFFN forward and backward', { skip: SKIP }, async (t) => {
  for (const [T, D, I, k] of [[1, 16, 32, 2], [53, 64, 96, 4]])
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const opts = { dModel: D, hidden: I, loops: k, dtype, seed: 9 }
      const c = new LoopFFN({ ...opts, device: 'cpu' }), d = new LoopFFN({ ...opts, device: 'cuda' })
      const x = tensor(fresh(T * D), [T, D]), dy = tensor(fresh(T * D), [T, D])
      const what = `T=${T} k=${k} ${dtype}`
      await close(t, d.forward(x.to('cuda')).y, c.forward(x).y, TOL_LAYER, `${what}: inference`)
      const rc = c.forward(x, { train: true }), rd = d.forward(x.to('cuda'), { train: true })
      await close(t, rd.y, rc.y, TOL_LAYER, `${what}: training forward`)
      await close(t, d.backward(rd, dy.to('cuda')), c.backward(rc, dy), TOL_LAYER, `${what}: dx`)
      for (const name of Object.keys(c.grads)) await close(t, d.grads[name], c.grads[name], TOL_LAYER, `${what}: grad ${name}`)
      c.dispose()
      d.dispose()
    }
})
