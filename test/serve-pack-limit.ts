// The limit on packed weights (VFFN_PACK_KIB, read once per process): a recorded CPU step of more
// than 8 rows packs its weights only while the packed copies stay within it, and packs the rest
// per call; the results are the same bits whatever the limit. Each limit runs in a child process.
import t from 'tap'
import { runSelf } from './helpers/child'
import { TransformerLM } from '../lib/index'
import { DecodeGraph } from '../lib/serve/graph'
import { KVPool } from '../lib/serve/pool'
import type { StepRow } from '../lib/serve/step'

const cfg = { ...TransformerLM.config('tiny'), nLayers: 2, maxSeqLen: 64, seed: 5 }

async function child(): Promise<void> {
  const m = new TransformerLM({ ...cfg, ffn: 'dense' })
  const B = 12, BS = 16
  const pool = new KVPool(m.blocks.length, m.config.dModel, B * BS, BS, m.device)
  const g = new DecodeGraph(m, pool, B)
  const rows: StepRow[] = Array.from({ length: B }, (_, b) => ({ tokens: Int32Array.of((b * 29 + 3) % 256), start: 0, blocks: [b], sample: true }))
  const params = Float32Array.from({ length: 4 * B }, (_, i) => [0.9, 0, 1, ((i >> 2) * 0.37) % 1][i % 4])
  const r = await g.run(rows, params, BS)
  const weights = [...m.parameters()].filter(([k]) => /att_proj|attn_out|ff_proj|ff_out/.test(k)).reduce((n, [, w]) => n + w.size * 4, 0)
  process.stdout.write(`RESULT ${JSON.stringify({ packed: g.info().packedBytes, weights, ids: Array.from(r.ids), logprobs: Array.from(r.logprobs) })}\n`)
  g.dispose()
  pool.dispose()
  m.dispose()
}

function run(kib: string | undefined): { packed: number; weights: number; ids: number[]; logprobs: number[] } {
  const r = runSelf(__filename, { VFFN_PACK_TEST_CHILD: '1', VFFN_PACK_KIB: kib }, 120000)
  const line = /RESULT (.*)/.exec(r.stdout)
  if (r.status !== 0 || !line) throw new Error(`child (VFFN_PACK_KIB=${kib}) failed: ${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`)
  return JSON.parse(line[1])
}

if (process.env.VFFN_PACK_TEST_CHILD) void child()
else
  t.test('packed weights stay within VFFN_PACK_KIB; the results do not depend on it', async (t) => {
    const all = run(undefined), none = run('0'), some = run('200')
    t.equal(all.packed, all.weights, `default limit (64 MiB): all ${all.weights} bytes of GEMM weights packed`)
    t.equal(none.packed, 0, 'VFFN_PACK_KIB=0: nothing packed')
    t.ok(some.packed > 0 && some.packed <= 200 * 1024, `VFFN_PACK_KIB=200: ${some.packed} bytes packed, within the limit`)
    t.ok(some.packed < some.weights, 'and not all of them')
    for (const [name, r] of [['0', none], ['200', some]] as const) {
      t.same(r.ids, all.ids, `limit ${name} KiB: the same ids`)
      t.same(r.logprobs, all.logprobs, `limit ${name} KiB: the same logprobs, exactly`)
    }
  })
