// Held-out evaluation: the model's mean next-token loss over the first batches of a dataset, read
// in order so every call sees the same tokens, in inference mode (no training state, nothing kept).
import { fail } from '../errors'
import { crossEntropy } from '../lm_ops'
import { TransformerLM } from '../nn/model'
import { tensor } from '../tensor'
import { arg, check, checkOptions, instance, int, optional } from '../validate'
import { TokenDataset } from './dataset'

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  batchSize: number
  seqLen: number
  /** batches to evaluate; default: as many whole batches as the dataset holds */
  batches?: number
}

/** What {@link evaluate} measured. */
export interface EvaluateResult {
  /** mean cross-entropy over the evaluated target tokens, in nats */
  loss: number
  /** exp(loss) */
  perplexity: number
  /** target tokens evaluated (batches x batchSize x seqLen) */
  tokens: number
}

const EVAL_OPTIONS = { batchSize: int(1, 1 << 20), seqLen: int(1, 1 << 24), batches: optional(int(1)) }

/**
 * Mean loss of `model` on the dataset's first `batches` batches of windows in stream order
 * (seqLen + 1 tokens each, as {@link TokenDataset.loader} with order 'sequential' cuts them).
 * Runs forward in inference mode (each token's own loop count, no noise) and frees every tensor
 * it made before resolving. Rejects with ERR_ARGUMENT if the dataset holds fewer batches, or an id
 * is outside the model's vocabulary.
 */
export async function evaluate(model: TransformerLM, dataset: TokenDataset, opts: EvaluateOptions): Promise<EvaluateResult> {
  arg('model', model, instance(TransformerLM))
  arg('dataset', dataset, check<TokenDataset>('a TokenDataset', (v) => v instanceof TokenDataset))
  const o = checkOptions('opts', opts, EVAL_OPTIONS, ['batchSize', 'seqLen'])
  const B = o.batchSize!, S = o.seqLen!, V = model.config.vocabSize
  if (S > model.config.maxSeqLen) fail('ERR_ARGUMENT', `opts.seqLen: ${S} exceeds the model's maxSeqLen ${model.config.maxSeqLen}`)
  const loader = dataset.loader({ batchSize: B, seqLen: S, order: 'sequential', device: model.device })
  const whole = Math.floor(loader.windows / B)
  if (whole === 0) fail('ERR_ARGUMENT', `opts.batchSize: the dataset holds ${loader.windows} windows of ${S + 1} tokens, fewer than one batch of ${B}`)
  const batches = o.batches ?? whole
  if (batches > whole) fail('ERR_ARGUMENT', `opts.batches: the dataset holds ${whole} batches of ${B} x ${S + 1} tokens, asked for ${batches}`)
  let sum = 0
  for (let i = 0; i < batches; i++) {
    const { tokens, targets } = loader.nextArrays()
    for (let j = 0; j < tokens.length; j++)
      if (tokens[j] >= V || targets[j] >= V)
        fail('ERR_ARGUMENT', `dataset: id ${Math.max(tokens[j], targets[j])} in batch ${i} is >= the model's vocabSize ${V}`)
    const x = tensorOf(tokens, [B, S], model), y = tensorOf(targets, [B * S], model)
    const out = model.forward(x)
    const logits = out.logits.reshape([B * S, V])
    const { loss, lse } = crossEntropy(logits, y)
    try {
      sum += (await loss.data())[0] * B * S
    } finally {
      for (const t of [x, y, logits, loss, lse]) t.dispose()
      out.dispose()
    }
  }
  const tokens = batches * B * S
  const loss = sum / tokens
  return { loss, perplexity: Math.exp(loss), tokens }
}
// batches go to the model's device
const tensorOf = (a: Int32Array, shape: number[], m: TransformerLM) => tensor(a, shape, { device: m.device })
