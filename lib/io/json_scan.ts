// A scanner over JSON text that JSON.parse has already accepted: it finds what JSON.parse hides.
// JSON.parse keeps the last of duplicate keys and turns 8.0, 1e3 and -0 into integers; a
// checkpoint's header must not rely on either, so we look at the tokens themselves.
import { fail, show } from '../errors'

interface Frame {
  obj: boolean
  keys: Set<string>
  expectKey: boolean
  /** the top-level key this frame sits under ('' for the top level itself) */
  entry: string
}

/**
 * Throws ERR_ARGUMENT (prefixed by `source`) on a duplicate key in any object, and on a number
 * that is not a plain non-negative integer literal (safetensors headers hold only counts and
 * offsets). `text` must already be valid JSON.
 */
export function scanHeaderTokens(text: string, source: string): void {
  const stack: Frame[] = []
  const where = (f: Frame | undefined) => (f && f.entry ? ` in entry ${show(f.entry)}` : '')
  let i = 0
  while (i < text.length) {
    const c = text[i]
    if (c === '"') {
      let j = i + 1
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      const top = stack[stack.length - 1]
      if (top?.obj && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string
        if (top.keys.has(key)) {
          if (stack.length === 1) fail('ERR_ARGUMENT', `${source}: the header names ${show(key)} twice (duplicate names are ambiguous)`)
          fail('ERR_ARGUMENT', `${source}: duplicate key ${show(key)}${where(top)}`)
        }
        top.keys.add(key)
        top.expectKey = false
        if (stack.length === 1) top.entry = key
      }
      i = j + 1
      continue
    }
    if (c === '{' || c === '[') {
      const parent = stack[stack.length - 1]
      stack.push({ obj: c === '{', keys: new Set(), expectKey: c === '{', entry: parent ? parent.entry : '' })
    } else if (c === '}' || c === ']') stack.pop()
    else if (c === ',') {
      const top = stack[stack.length - 1]
      if (top.obj) top.expectKey = true
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      let j = i
      while (j < text.length && /[-+.eE0-9]/.test(text[j])) j++
      const tok = text.slice(i, j)
      if (!/^(0|[1-9][0-9]*)$/.test(tok))
        fail('ERR_ARGUMENT', `${source}: number ${tok}${where(stack[stack.length - 1])} is not a non-negative integer (shapes and offsets are counts)`)
      i = j
      continue
    }
    i++
  }
}
