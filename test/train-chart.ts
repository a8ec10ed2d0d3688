// The loss chart's geometry: every point sits where the axes' tick labels say it should, a step
// logged twice (a resumed run repeating it) is drawn once, and a diverged (null) loss is left out.
import t from 'tap'
import { renderLossChart } from '../lib/train/chart'
import type { LogLine } from '../lib/train/log'

const train = (step: number, loss: number | null): LogLine => ({ type: 'train', step, loss: loss as number, lr: 1e-3, gradNorm: 1, tau: null, loops: null, tokens: step * 8, tokensPerSec: 100, time: step * 0.25 })
const val = (step: number, loss: number): LogLine => ({ type: 'val', step, loss, perplexity: Math.exp(loss), tokens: 64, time: step * 0.25 })

function parse(svg: string) {
  const polys = [...svg.matchAll(/<polyline class="(\w+)"[^>]*points="([^"]*)"/g)].map((m) => ({ kind: m[1], pts: m[2].split(' ').map((p) => p.split(',').map(Number)) }))
  const labels = [...svg.matchAll(/<text x="([\d.]+)" y="([\d.]+)" font-size="11" text-anchor="(middle|end)" fill="#444">([^<]*)</g)].map((m) => ({ x: +m[1], y: +m[2], anchor: m[3], v: +m[4] }))
  return { polys, labels }
}

t.test('points follow the axes', async (t) => {
  // losses 5.0, 4.9, ... 3.1 over steps 1..20, validation at 10 and 20; step 12 logged twice
  const lines: LogLine[] = []
  for (let s = 1; s <= 20; s++) lines.push(train(s, 5 - 0.1 * s))
  lines.splice(12, 0, train(12, 9)) // an earlier process's step 12, replaced by the later line
  lines.push(train(12, 5 - 1.2))
  lines.push(val(10, 4.2), val(20, 3.4))
  const svg = renderLossChart([{ name: 'a', lines }])
  const { polys, labels } = parse(svg)
  t.same(polys.map((p) => p.kind), ['train', 'val', 'train', 'val'], 'train and validation in both panels')
  const [stepTrain, stepVal, timeTrain] = polys
  t.equal(stepTrain.pts.length, 20, 'one point per step, the repeated step once')
  // x: the step panel's tick labels (anchored middle) map steps to pixels linearly
  const xTicks = labels.filter((l) => l.anchor === 'middle' && l.x < 480)
  const xOf = (v: number) => {
    const [a, b] = [xTicks[0], xTicks[xTicks.length - 1]]
    return a.x + ((v - a.v) / (b.v - a.v)) * (b.x - a.x)
  }
  const yTicks = labels.filter((l) => l.anchor === 'end' && l.x < 480)
  const yOf = (v: number) => {
    const [a, b] = [yTicks[0], yTicks[yTicks.length - 1]]
    return a.y - 4 + ((v - a.v) / (b.v - a.v)) * (b.y - a.y)
  }
  t.ok(yTicks.length >= 2 && xTicks.length >= 2, 'both axes have ticks')
  stepTrain.pts.forEach(([x, y], i) => {
    const step = i + 1
    t.ok(Math.abs(x - xOf(step)) < 0.11, `step ${step}: x ${x} vs ${xOf(step)}`)
    t.ok(Math.abs(y - yOf(5 - 0.1 * step)) < 0.11, `step ${step}: y ${y} vs ${yOf(5 - 0.1 * step)}`)
  })
  t.ok(Math.abs(stepVal.pts[1][1] - yOf(3.4)) < 0.11, 'validation loss at its height')
  t.ok(Math.abs(stepVal.pts[0][0] - xOf(10)) < 0.11, 'validation at its step')
  // the time panel: the same heights, x by seconds (0.25 s per step)
  timeTrain.pts.forEach(([, y], i) => t.ok(Math.abs(y - stepTrain.pts[i][1]) < 1e-9))
  t.ok(timeTrain.pts[19][0] > timeTrain.pts[0][0], 'time grows to the right')
  t.match(svg, /<text x="\d+" y="\d+" font-size="11">a<\/text>/, 'the legend names the run')
})

t.test('a null loss is left out, and runs get their own colours', async (t) => {
  const a = [train(1, 5), train(2, null), train(3, 4)]
  const b = [train(1, 5.5), train(2, 5), train(3, 4.5)]
  const svg = renderLossChart([{ name: 'a', lines: a }, { name: 'b', lines: b }])
  const { polys } = parse(svg)
  t.same(polys.map((p) => p.pts.length), [2, 3, 2, 3], 'the diverged step is skipped (panels by step, then by time)')
  const colours = [...svg.matchAll(/<polyline class="train" fill="none" stroke="(#[0-9a-f]+)"/g)].map((m) => m[1])
  t.equal(new Set(colours).size, 2)
  t.notMatch(svg, /NaN/)
})
