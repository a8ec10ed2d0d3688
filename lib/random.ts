// mulberry32: a small seeded generator with 32 bits of state, for draws that must depend on their
// seed alone (a request's sampling, a dataset's shuffle, the bench's token order). Not for secrets.

/** A generator of uniform 32-bit unsigned integers from `seed` (taken modulo 2^32). */
export function mulberry32Bits(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** A generator of uniform numbers in [0, 1) from `seed` (taken modulo 2^32). */
export function mulberry32(seed: number): () => number {
  const next = mulberry32Bits(seed)
  return () => next() / 4294967296
}
