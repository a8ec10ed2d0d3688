// the language-model ops on CUDA against the CPU ops on fresh random data: embedding, rotary,
// attention, cross-entropy, gradient norm, AdamW, axpy. without a GPU every test skips and says why.
import t, { Test } from 'tap'
import { cuda, matmul, tensor, Tensor } from '../lib/index'
import { embedding, embeddingBackward, rope, attention, attentionBackward, crossEntropy, crossEntropyBackward, gradNorm, adamwStep, axpy } from '../lib/index'
import { freshData } from './helpers/fresh'

const SKIP = cuda.available() ? false : `no GPU here, CUDA ops cannot run: ${cuda.reason()}`
const data = freshData(5000) // fresh data on every run; data.seed is printed on failure
const fresh = data.fresh
const ints = (n: number, max: number) => Int32Array.from(fresh(n), (v) => Math.floor((v + 1) / 2 * max) % max)
const cu = (x: Tensor) => x.to('cuda')

async function close(t: Test, got: Tensor, want: Tensor, tol: number, what: string) {
  const [g, w] = [await got.data(), await want.data()]
  let num = 0, den = 0, finite = g.length === w.length
  for (let i = 0; i < g.length && finite; i++) {
    finite = Number.isFinite(g[i])
    num += (g[i] - w[i]) ** 2
    den += w[i] ** 2
  }
  const e = finite ? Math.sqrt(num / Math.max(den, 1e-30)) : Infinity
  t.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} <= ${tol} (seed ${data.seed})`)
}

// float32 elementwise and reduction kernels: summation order and fast exp/sin differ from the CPU
const TOL = 1e-5
// attention chains two exponentials and dot products per score
const TOL_ATTN = 1e-4

t.test('embedding forward/backward, bad ids rejected', { skip: SKIP }, async (t) => {
  const V = 37, D = 24, T = 50
  const w = tensor(fresh(V * D), [V, D]), ids = tensor(ints(T, V), [T], { dtype: 'int32' })
  await close(t, embedding(cu(w), cu(ids)), embedding(w, ids), 0, 'gather is exact')
  const w16 = w.astype('bfloat16')
  await close(t, embedding(cu(w16), cu(ids)), embedding(w16, ids), 0, 'bfloat16 weights widen exactly')
  const g = tensor(fresh(T * D), [T, D])
  const dc = tensor(fresh(V * D), [V, D]), dd = cu(dc)
  embeddingBackward(dc, g, ids)
  embeddingBackward(dd, cu(g), cu(ids))
  await close(t, dd, dc, TOL, 'scatter-add (repeated ids summed in token order)')
  const bad = tensor(Int32Array.from([1, V]), [2], { dtype: 'int32', device: 'cuda' })
  const wc = cu(w)
  const out = embedding(wc, bad)
  const down = matmul(out, wc, { transposeB: true })
  const fine = embedding(wc, cu(ids))
  await bad.device.sync() // the device is fine: the failure belongs to the op's outputs
  await t.rejects(out.data(), { code: 'ERR_ARGUMENT', message: /op 'embedding_forward' failed: tokens: id 37 at position 1/ }, 'an id outside the vocabulary fails the op\'s output')
  await t.rejects(down.data(), { code: 'ERR_ARGUMENT', message: /id 37/ }, 'and what is computed from it')
  await close(t, fine, embedding(w, ids), 0, 'a later op on the same device is unaffected')
})

t.test('rope forward and inverse', { skip: SKIP }, async (t) => {
  const x = tensor(fresh(2 * 7 * 48), [2, 7, 48])
  const xc = x.clone(), xd = cu(x)
  rope(xc, 3, 1000)
  rope(xd, 3, 1000)
  await close(t, xd, xc, TOL, 'forward at positions 1000..1006')
  rope(xd, 3, 1000, { inverse: true })
  await close(t, xd, x, TOL, 'inverse restores x')
})

t.test('attention forward and backward, with and without a query offset', { skip: SKIP }, async (t) => {
  for (const [B, Sq, Sk, H, hd] of [[1, 1, 1, 1, 8], [2, 19, 19, 3, 16], [1, 5, 33, 2, 64]]) {
    const q = tensor(fresh(B * Sq * H * hd), [B, Sq, H * hd]), k = tensor(fresh(B * Sk * H * hd), [B, Sk, H * hd])
    const v = tensor(fresh(B * Sk * H * hd), [B, Sk, H * hd]), dout = tensor(fresh(B * Sq * H * hd), [B, Sq, H * hd])
    const qOffset = Sk - Sq
    const c = attention(q, k, v, H, { qOffset }), d = attention(cu(q), cu(k), cu(v), H, { qOffset })
    await close(t, d.out, c.out, TOL_ATTN, `out B${B} Sq${Sq} Sk${Sk} H${H} hd${hd}`)
    await close(t, d.lse, c.lse, TOL_ATTN, 'lse')
    const gc = { dq: tensor(fresh(q.size), [...q.shape]), dk: tensor(fresh(k.size), [...k.shape]), dv: tensor(fresh(v.size), [...v.shape]) }
    const gd = { dq: cu(gc.dq), dk: cu(gc.dk), dv: cu(gc.dv) }
    attentionBackward(gc, dout, { q, k, v, out: c.out, lse: c.lse }, H, { qOffset })
    attentionBackward(gd, cu(dout), { q: cu(q), k: cu(k), v: cu(v), out: d.out, lse: d.lse }, H, { qOffset })
    for (const n of ['dq', 'dk', 'dv'] as const) await close(t, gd[n], gc[n], TOL_ATTN, n)
  }
})

t.test('cross-entropy forward and backward, ignored targets', { skip: SKIP }, async (t) => {
  const T = 33, V = 301
  const logits = tensor(fresh(T * V, 4), [T, V])
  const tg = ints(T, V)
  tg[3] = -100
  const targets = tensor(tg, [T], { dtype: 'int32' })
  const c = crossEntropy(logits, targets), d = crossEntropy(cu(logits), cu(targets))
  await close(t, d.loss, c.loss, TOL, 'loss')
  await close(t, d.lse, c.lse, TOL, 'lse')
  await close(t, crossEntropyBackward(cu(logits), cu(targets), d.lse, 0.7), crossEntropyBackward(logits, targets, c.lse, 0.7), TOL, 'dlogits')
})

t.test('gradient norm, AdamW with the clip, axpy', { skip: SKIP }, async (t) => {
  const gs = [tensor(fresh(1000), [1000]), tensor(fresh(70000, 0.1), [70000]), tensor(fresh(3), [3])]
  const nc = gradNorm(gs, 0.5), nd = gradNorm(gs.map(cu), 0.5)
  await close(t, nd, nc, 1e-6, 'norm and clip coefficient (double sums)')
  const p = tensor(fresh(70000), [70000]), m = tensor(fresh(70000, 0.01), [70000]), v = tensor(fresh(70000, 0.01).map(Math.abs), [70000])
  const [pd, md, vd] = [cu(p), cu(m), cu(v)]
  const h = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 }
  adamwStep(p, gs[1], m, v, h, nc)
  adamwStep(pd, cu(gs[1]), md, vd, h, nd)
  for (const [a, b, n] of [[pd, p, 'param'], [md, m, 'm'], [vd, v, 'v']] as const) await close(t, a, b, TOL, n)
  // a non-finite global norm skips the step on both backends: nothing changes
  const bad = tensor(Float32Array.from([1, NaN, 2]), [3])
  const pn = tensor(fresh(3), [3]), pnd = cu(pn), before = await pn.data()
  adamwStep(pnd, cu(bad), cu(tensor(fresh(3), [3])), cu(tensor(fresh(3).map(Math.abs), [3])), h, gradNorm([cu(bad)], 1))
  t.same(await pnd.data(), before, 'NaN norm: the step is skipped')
  const y = tensor(fresh(999), [999]), x = tensor(fresh(999), [999]), yd = cu(y)
  axpy(y, x, -0.3)
  axpy(yd, cu(x), -0.3)
  await close(t, yd, y, TOL, 'axpy')
})
