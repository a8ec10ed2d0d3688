// GPT-2's byte-level BPE from the gpt-tokenizer package (an optional dependency, loaded on first
// use): the core never needs it, and without it the first encode or decode says how to install it.
import { fail, show } from '../errors'
import { arg, arrayOf, custom, int, string } from '../validate'

/** GPT-2's vocabulary: 50,256 BPE merges and bytes plus <|endoftext|>. */
export const GPT2_VOCAB_SIZE = 50257
/** The embedding size llm.c uses for GPT-2: 50,257 padded up to a multiple of 128 (the extra rows are never targets). */
export const GPT2_PADDED_VOCAB_SIZE = 50304
/** <|endoftext|>, which llm.c puts before every document. */
export const GPT2_EOT = 50256

interface Backend {
  encode(text: string, opts?: { disallowedSpecial?: Set<string> }): number[]
  decode(ids: Iterable<number>): string
}

let backend: Backend | undefined

function load(): Backend {
  if (backend) return backend
  try {
    backend = require('gpt-tokenizer/encoding/gpt2') as Backend
  } catch (e) {
    if ((e as { code?: string }).code !== 'MODULE_NOT_FOUND') throw e
    return fail('ERR_UNSUPPORTED', 'tokenizer: GPT-2 tokenization needs the optional dependency gpt-tokenizer; install it with `npm install gpt-tokenizer`')
  }
  return backend
}

const ids = arrayOf(int(0, GPT2_VOCAB_SIZE - 1))
const idList = custom<number[]>(`an array or Int32Array/Uint16Array/Uint32Array of ids in [0, ${GPT2_VOCAB_SIZE - 1}]`, (name, v) => {
  if (v instanceof Int32Array || v instanceof Uint16Array || v instanceof Uint32Array) return ids(name, Array.from(v))
  if (!Array.isArray(v)) fail('ERR_ARGUMENT', `${name}: expected an array or Int32Array/Uint16Array/Uint32Array of ids, got ${show(v)}`)
  return ids(name, v)
})

/**
 * GPT-2's tokenizer (50,257 ids; models usually pad the embedding to {@link GPT2_PADDED_VOCAB_SIZE}).
 * Encoding and decoding are gpt-tokenizer's, which ships the vocabulary; `available()` says whether it is installed.
 */
export class GPT2Tokenizer {
  readonly vocabSize = GPT2_VOCAB_SIZE
  readonly paddedVocabSize = GPT2_PADDED_VOCAB_SIZE
  readonly eot = GPT2_EOT

  /** Whether the optional dependency gpt-tokenizer can be loaded here. */
  static available(): boolean {
    try {
      load()
      return true
    } catch {
      return false
    }
  }

  /** Text to ids. "<|endoftext|>" in the text is plain text (add {@link GPT2_EOT} by id where a document starts). */
  encode(text: string): number[] {
    arg('text', text, string)
    return load().encode(text, { disallowedSpecial: new Set() })
  }

  /** Ids to text (an id that ends inside a multi-byte character decodes to U+FFFD, as UTF-8 decoding does). */
  decode(tokens: readonly number[] | Int32Array | Uint16Array | Uint32Array): string {
    const list = arg('ids', tokens, idList)
    return load().decode(list)
  }
}
