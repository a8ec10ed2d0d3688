// the language-model ops against float64 references written plainly here (and finite differences
// of those references), ragged sizes, poisoned outputs.
import t from 'tap'
import { tensor, empty, full } from '../lib/index'
import {
  embedding, embeddingBackward, rope, attention, attentionBackward, crossEntropy, crossEntropyBackward, gradNorm, adamwStep, axpy, zero_,
} from '../lib/lm_ops'

function rng(seed: number) {
  let s = seed >>> 0
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0
    return s / 2 ** 32
  }
}
const randArr = (n: number, seed: number, scale = 1) => {
  const r = rng(seed)
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale)
}
function maxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) || (Number.isNaN(a[i] - b[i]) ? Infinity : 0))
  return m
}

t.test('embedding gather and deterministic scatter-add', async (t) => {
  const V = 13, D = 37, ids = Int32Array.from([3, 0, 12, 3, 7, 3, 12])
  const w = randArr(V * D, 1), g = randArr(ids.length * D, 2)
  const out = full([ids.length, D], NaN)
  embedding(tensor(w, [V, D]), tensor(ids, [ids.length]), out)
  const ref = new Float64Array(ids.length * D)
  for (let i = 0; i < ids.length; i++) for (let j = 0; j < D; j++) ref[i * D + j] = w[ids[i] * D + j]
  t.equal(maxErr(await out.data(), ref), 0, 'a gather is exact')
  const dw0 = randArr(V * D, 3)
  const dw = tensor(dw0.slice(), [V, D])
  embeddingBackward(dw, tensor(g, [ids.length, D]), tensor(ids, [ids.length]))
  const dref = Float64Array.from(dw0)
  for (let i = 0; i < ids.length; i++) for (let j = 0; j < D; j++) dref[ids[i] * D + j] += g[i * D + j]
  // float32 sums of up to 4 terms against float64
  t.ok(maxErr(await dw.data(), dref) < 1e-6)
  const bad = embedding(tensor(w, [V, D]), tensor(Int32Array.from([1, V]), [2]))
  await t.rejects(bad.data(), { code: 'ERR_ARGUMENT', message: /id 13 at position 1 is outside the vocabulary \[0, 13\)/ })
})

function ropeRef(x: Float32Array, B: number, S: number, H: number, hd: number, off: number, sign = 1): Float64Array {
  const y = Float64Array.from(x)
  const half = hd / 2
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < half; i++) {
          const ang = (off + s) * Math.pow(10000, (-2 * i) / hd)
          const p = ((b * S + s) * H + h) * hd
          const a = x[p + i], c = x[p + i + half]
          y[p + i] = a * Math.cos(ang) - sign * c * Math.sin(ang)
          y[p + i + half] = c * Math.cos(ang) + sign * a * Math.sin(ang)
        }
  return y
}

t.test('rotary embedding, offset, strided view and inverse', async (t) => {
  const B = 2, S = 9, H = 3, hd = 10, off = 1234
  const x = randArr(B * S * H * hd, 4)
  const xt = tensor(x, [B, S, H * hd])
  rope(xt, H, off)
  // float32 angle arithmetic at positions near 1e3 costs ~1e-4 relative in cos/sin
  t.ok(maxErr(await xt.data(), ropeRef(x, B, S, H, hd, off)) < 2e-4)
  rope(xt, H, off, { inverse: true })
  // rotate then rotate back: two roundings per element
  t.ok(maxErr(await xt.data(), x) < 1e-5)
  // a column view inside a wider row (the q|k part of a fused qkv)
  const wide = randArr(S * 3 * H * hd, 5)
  const wt = tensor(wide, [1, S, 3 * H * hd])
  rope(wt.slice(2, 0, 2 * H * hd), 2 * H, 0)
  const got = await wt.data()
  const sub = new Float32Array(S * 2 * H * hd)
  for (let s = 0; s < S; s++) sub.set(wide.subarray(s * 3 * H * hd, s * 3 * H * hd + 2 * H * hd), s * 2 * H * hd)
  const ref = ropeRef(sub, 1, S, 2 * H, hd, 0)
  let e = 0
  for (let s = 0; s < S; s++)
    for (let j = 0; j < 3 * H * hd; j++) {
      const want = j < 2 * H * hd ? ref[s * 2 * H * hd + j] : wide[s * 3 * H * hd + j]
      e = Math.max(e, Math.abs(got[s * 3 * H * hd + j] - want))
    }
  // float32 rotation at small positions
  t.ok(e < 1e-5, `strided rope error ${e}`)
})

// plain causal attention in float64; returns out and the gradients for a given dout
function attnRef(q: Float32Array, k: Float32Array, v: Float32Array, dO: Float64Array | null, B: number, Sq: number, Sk: number, H: number, hd: number, off: number) {
  const C = H * hd, sc = 1 / Math.sqrt(hd)
  const out = new Float64Array(B * Sq * C), dq = new Float64Array(B * Sq * C), dk = new Float64Array(B * Sk * C), dv = new Float64Array(B * Sk * C)
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Sq; i++) {
        const nk = off + i + 1
        const s = new Float64Array(nk)
        let mx = -Infinity
        for (let j = 0; j < nk; j++) {
          let d = 0
          for (let c = 0; c < hd; c++) d += q[(b * Sq + i) * C + h * hd + c] * k[(b * Sk + j) * C + h * hd + c]
          s[j] = d * sc
          mx = Math.max(mx, s[j])
        }
        let z = 0
        for (let j = 0; j < nk; j++) z += (s[j] = Math.exp(s[j] - mx))
        for (let j = 0; j < nk; j++) s[j] /= z
        for (let j = 0; j < nk; j++)
          for (let c = 0; c < hd; c++) out[(b * Sq + i) * C + h * hd + c] += s[j] * v[(b * Sk + j) * C + h * hd + c]
        if (!dO) continue
        const dp = new Float64Array(nk)
        let dot = 0
        for (let j = 0; j < nk; j++) {
          for (let c = 0; c < hd; c++) {
            dp[j] += dO[(b * Sq + i) * C + h * hd + c] * v[(b * Sk + j) * C + h * hd + c]
            dv[(b * Sk + j) * C + h * hd + c] += s[j] * dO[(b * Sq + i) * C + h * hd + c]
          }
          dot += s[j] * dp[j]
        }
        for (let j = 0; j < nk; j++) {
          const ds = s[j] * (dp[j] - dot) * sc
          for (let c = 0; c < hd; c++) {
            dq[(b * Sq + i) * C + h * hd + c] += ds * k[(b * Sk + j) * C + h * hd + c]
            dk[(b * Sk + j) * C + h * hd + c] += ds * q[(b * Sq + i) * C + h * hd + c]
          }
        }
      }
  return { out, dq, dk, dv }
}

for (const [B, Sq, Sk, H, hd, off] of [[2, 70, 70, 2, 8, 0], [1, 1, 1, 1, 4, 0], [3, 5, 133, 2, 6, 128], [1, 130, 130, 3, 16, 0]]) {
  t.test(`attention B=${B} Sq=${Sq} Sk=${Sk} H=${H} hd=${hd} offset=${off}`, async (t) => {
    const C = H * hd
    const q = randArr(B * Sq * C, 10 + Sq, 1.5), k = randArr(B * Sk * C, 20 + Sk, 1.5), v = randArr(B * Sk * C, 30 + Sk)
    const dO = randArr(B * Sq * C, 40 + Sq)
    const ref = attnRef(q, k, v, Float64Array.from(dO), B, Sq, Sk, H, hd, off)
    // q, k, v as column views of one fused [B, S, 3C] buffer when they share a length
    let qt, kt, vt
    if (Sq === Sk) {
      const qkv = new Float32Array(B * Sq * 3 * C)
      for (let r = 0; r < B * Sq; r++) {
        qkv.set(q.subarray(r * C, r * C + C), r * 3 * C)
        qkv.set(k.subarray(r * C, r * C + C), r * 3 * C + C)
        qkv.set(v.subarray(r * C, r * C + C), r * 3 * C + 2 * C)
      }
      const f = tensor(qkv, [B, Sq, 3 * C])
      ;[qt, kt, vt] = [f.slice(2, 0, C), f.slice(2, C, 2 * C), f.slice(2, 2 * C, 3 * C)]
    } else [qt, kt, vt] = [tensor(q, [B, Sq, C]), tensor(k, [B, Sk, C]), tensor(v, [B, Sk, C])]
    const out = full([B, Sq, C], NaN)
    const r = attention(qt, kt, vt, H, { qOffset: off, out })
    // float32 dot products of length hd and softmax sums of up to Sk terms
    t.ok(maxErr(await r.out.data(), ref.out) < 2e-5, 'forward')
    const dq = full([B, Sq, C], NaN), dk = full([B, Sk, C], NaN), dv = full([B, Sk, C], NaN)
    attentionBackward({ dq, dk, dv }, tensor(dO, [B, Sq, C]), { q: qt, k: kt, v: vt, out: r.out, lse: r.lse }, H, { qOffset: off })
    // float32 accumulation over up to Sk keys and Sq queries of O(1) terms
    const tol = 1e-4
    t.ok(maxErr(await dq.data(), ref.dq) < tol, 'dq')
    t.ok(maxErr(await dk.data(), ref.dk) < tol, 'dk')
    t.ok(maxErr(await dv.data(), ref.dv) < tol, 'dv')
    if (B * Sq * C > 200) return
    // the float64 reference's analytic gradient against its own finite differences (checks the formulas)
    const loss = (qq: Float32Array) => attnRef(qq, k, v, null, B, Sq, Sk, H, hd, off).out.reduce((s, o, i) => s + o * dO[i], 0)
    for (const i of [0, Math.floor(q.length / 2), q.length - 1]) {
      const qp = q.slice(), qm = q.slice(), h = 1e-3
      qp[i] += h
      qm[i] -= h
      const fd = (loss(qp) - loss(qm)) / (qp[i] - qm[i])
      // central difference on float32-rounded steps: error O(h^2) plus rounding of the step
      t.ok(Math.abs(fd - ref.dq[i]) < 1e-4, `finite difference dq[${i}]`)
    }
  })
}

t.test('cross-entropy with an ignore index', async (t) => {
  const T = 7, V = 11, ignore = -1
  const x = randArr(T * V, 50, 3)
  const tg = Int32Array.from([3, 10, -1, 0, 5, -1, 3])
  const logits = tensor(x, [T, V]), targets = tensor(tg, [T])
  const { loss, lse } = crossEntropy(logits, targets, ignore)
  let ref = 0, n = 0
  const dref = new Float64Array(T * V)
  for (let i = 0; i < T; i++) {
    if (tg[i] === ignore) continue
    n++
    let z = 0
    for (let j = 0; j < V; j++) z += Math.exp(x[i * V + j])
    ref += Math.log(z) - x[i * V + tg[i]]
  }
  for (let i = 0; i < T; i++) {
    if (tg[i] === ignore) continue
    let z = 0
    for (let j = 0; j < V; j++) z += Math.exp(x[i * V + j])
    for (let j = 0; j < V; j++) dref[i * V + j] = (Math.exp(x[i * V + j]) / z - (j === tg[i] ? 1 : 0)) * 2.5 / n
  }
  // a float32 log-sum-exp per row, summed in double
  t.ok(Math.abs((await loss.data())[0] - ref / n) < 1e-5)
  const d = full([T, V], NaN)
  crossEntropyBackward(logits, targets, lse, 2.5, ignore, d)
  // float32 exp of values up to 3
  t.ok(maxErr(await d.data(), dref) < 1e-6)
  crossEntropyBackward(logits, targets, lse, 2.5, ignore, logits)
  t.ok(maxErr(await logits.data(), dref) < 1e-6, 'in place over the logits')
  const bad = crossEntropy(tensor(x, [T, V]), tensor(Int32Array.from([0, 1, 2, 3, 4, 5, 11]), [T]))
  await t.rejects(bad.loss.data(), { code: 'ERR_ARGUMENT', message: /targets: id 11 at position 6/ })
})

t.test('global gradient norm and AdamW', async (t) => {
  const a = randArr(40000, 60), b = randArr(17, 61, 5)
  const nrm = gradNorm([tensor(a), tensor(b, [17, 1])], 1.0)
  let s = 0
  for (const v of [...a, ...b]) s += v * v
  const [norm, coef] = await nrm.data()
  // float32 storage of a float64 sum
  t.ok(Math.abs(norm - Math.sqrt(s)) < 1e-4 * Math.sqrt(s))
  t.ok(Math.abs(coef - 1 / (Math.sqrt(s) + 1e-6)) < 1e-7)
  const n = 1000, p0 = randArr(n, 62), hyp = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }
  const p = tensor(p0.slice()), m = full([n], 0), v = full([n], 0)
  const pr = Float64Array.from(p0), mr = new Float64Array(n), vr = new Float64Array(n)
  for (let step = 1; step <= 3; step++) {
    const g = randArr(n, 70 + step, 3)
    const clip = gradNorm([tensor(g)], 2.0)
    adamwStep(p, tensor(g), m, v, { ...hyp, step }, clip)
    let gs = 0
    for (const x of g) gs += x * x
    const c = Math.min(1, 2 / (Math.sqrt(gs) + 1e-6))
    for (let i = 0; i < n; i++) {
      const gi = g[i] * c
      mr[i] = 0.9 * mr[i] + 0.1 * gi
      vr[i] = 0.95 * vr[i] + 0.05 * gi * gi
      pr[i] -= hyp.lr * (hyp.weightDecay * pr[i] + mr[i] / (1 - 0.9 ** step) / (Math.sqrt(vr[i] / (1 - 0.95 ** step)) + 1e-8))
    }
  }
  // three float32 updates of size ~lr
  t.ok(maxErr(await p.data(), pr) < 1e-5)
  t.ok(maxErr(await m.data(), mr) < 1e-6)
  // a NaN in any gradient makes the norm NaN: the step is skipped, nothing is poisoned
  const before = await p.data()
  const gbad = randArr(n, 80)
  gbad[17] = NaN
  const clipBad = gradNorm([tensor(gbad)], 1.0)
  adamwStep(p, tensor(gbad), m, v, { ...hyp, step: 4 }, clipBad)
  t.ok(Number.isNaN((await clipBad.data())[0]), 'the norm reports the NaN')
  t.same(Array.from(await p.data()), Array.from(before), 'parameters unchanged')
  t.ok(maxErr(await m.data(), mr) < 1e-6, 'moments unchanged')
})

t.test('axpy and zero_', async (t) => {
  const a = randArr(3001, 90), b = randArr(3001, 91)
  const y = tensor(a.slice())
  axpy(y, tensor(b), -0.5)
  // one float32 multiply-add per element
  t.ok(maxErr(await y.data(), Array.from(a, (v, i) => v - 0.5 * b[i])) < 1e-6)
  const z = tensor(randArr(5 * 7, 92), [5, 7])
  zero_(z.rows(1, 3))
  const got = await z.data()
  const want = randArr(5 * 7, 92)
  want.fill(0, 7, 21)
  t.same(Array.from(got), Array.from(want), 'rows 1..2 zeroed, the rest untouched')
  const w = tensor(randArr(12, 93), [3, 4])
  zero_(w.cols(1, 3))
  const gw = await w.data(), ww = randArr(12, 93)
  for (let r = 0; r < 3; r++) ww[r * 4 + 1] = ww[r * 4 + 2] = 0
  t.same(Array.from(gw), Array.from(ww), 'a strided view is zeroed through fill_')
})
