// A small stand-in for `tap`, enough to run the compiled CUDA tests on a machine with Node but
// no npm registry (the lent GPU machine): t.test with { skip }, and the assertions those tests
// use. Output is TAP-like; the last line is "# pass N fail N skip N". VFFN_TEST_FILTER (a regular
// expression) runs only the top-level tests whose name matches.
'use strict'
const util = require('util')

const counts = { pass: 0, fail: 0, skip: 0 }
const filter = process.env.VFFN_TEST_FILTER ? new RegExp(process.env.VFFN_TEST_FILTER) : null

function same(a, b) {
  if (a === b) return true
  if (typeof a === 'number' && typeof b === 'number') return Number.isNaN(a) && Number.isNaN(b)
  if (a == null || b == null || typeof a !== 'object' || typeof b !== 'object') return a == b // eslint-disable-line eqeqeq
  const ka = Object.keys(a), kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  return ka.every((k) => same(a[k], b[k]))
}

function matches(err, want) {
  if (!want) return true
  for (const [k, v] of Object.entries(want)) {
    const got = err == null ? undefined : err[k]
    if (v instanceof RegExp ? !v.test(String(got)) : got !== v) return false
  }
  return true
}

class Test {
  constructor(name, depth) {
    this.name = name
    this.depth = depth
    this.n = 0
    this.failed = 0
    this.children = Promise.resolve()
  }
  line(ok, msg, extra) {
    this.n++
    if (ok) counts.pass++
    else {
      counts.fail++
      this.failed++
    }
    const pad = '    '.repeat(this.depth)
    console.log(`${pad}${ok ? 'ok' : 'not ok'} ${this.n} - ${msg}`)
    if (!ok && extra) console.log(`${pad}  # ${extra}`)
    return ok
  }
  ok(v, msg = 'should be truthy') { return this.line(!!v, msg) }
  notOk(v, msg = 'should be falsy') { return this.line(!v, msg) }
  pass(msg = 'pass') { return this.line(true, msg) }
  fail(msg = 'fail') { return this.line(false, msg) }
  equal(a, b, msg = 'should be equal') { return this.line(a === b, msg, `got ${util.inspect(a)}, want ${util.inspect(b)}`) }
  same(a, b, msg = 'should be equivalent') { return this.line(same(a, b), msg, `got ${util.inspect(a, { maxArrayLength: 8 })}, want ${util.inspect(b, { maxArrayLength: 8 })}`) }
  type(v, t, msg = `type is ${t}`) { return this.line(typeof v === t || (typeof t === 'function' && v instanceof t), msg) }
  match(s, re, msg = 'should match') { return this.line(re.test(String(s)), msg, `got ${util.inspect(s)}`) }
  notMatch(s, re, msg = 'should not match') { return this.line(!re.test(String(s)), msg, `got ${util.inspect(s)}`) }
  throws(fn, want, msg = 'expected to throw') {
    try {
      fn()
    } catch (e) {
      return this.line(matches(e, want), msg, `threw ${e && e.code} ${e && e.message}`)
    }
    return this.line(false, msg, 'did not throw')
  }
  async rejects(promise, want, msg = 'expected to reject') {
    try {
      await (typeof promise === 'function' ? promise() : promise)
    } catch (e) {
      return this.line(matches(e, want), msg, `rejected with ${e && e.code} ${e && e.message}`)
    }
    return this.line(false, msg, 'did not reject')
  }
  test(name, opts, fn) {
    if (typeof opts === 'function') [opts, fn] = [{}, opts]
    opts = opts || {}
    this.children = this.children.then(async () => {
      const pad = '    '.repeat(this.depth)
      if (this.depth === 0 && filter && !filter.test(name)) return
      if (opts.skip) {
        this.n++
        counts.skip++
        console.log(`${pad}ok ${this.n} - ${name} # SKIP ${opts.skip === true ? '' : opts.skip}`)
        return
      }
      console.log(`${pad}# Subtest: ${name}`)
      const sub = new Test(name, this.depth + 1)
      const t0 = Date.now()
      try {
        await fn(sub)
        await sub.children
      } catch (e) {
        sub.line(false, `threw: ${e && e.stack ? e.stack.split('\n').slice(0, 4).join(' | ') : e}`)
      }
      this.n++
      console.log(`${pad}${sub.failed ? 'not ok' : 'ok'} ${this.n} - ${name} # time=${Date.now() - t0}ms`)
      if (sub.failed) this.failed++
    })
    return this.children
  }
}

const root = new Test('root', 0)
process.on('beforeExit', () => {
  if (root.done) return
  root.done = true
  root.children.then(() => {
    console.log(`# pass ${counts.pass} fail ${counts.fail} skip ${counts.skip}`)
    process.exitCode = counts.fail ? 1 : 0
  })
})
module.exports = root
module.exports.Test = Test
