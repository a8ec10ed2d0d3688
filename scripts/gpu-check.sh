#!/usr/bin/env bash
# The whole CUDA check on a lent GPU in one call (see bench/README.md).
#   scripts/gpu-check.sh pack   here: build with CUDA, compile the CUDA tests and benchmarks to JS,
#                               bundle them with the addon, a tap stand-in and an xz'd node into .gpu/
#   scripts/gpu-check.sh run    on the GPU machine (no Node, no npm there), with .gpu carried:
#                               CUDA tests, compute-sanitizer memcheck and racecheck, benchmarks;
#                               log and JSON to $OUT (gpu-check.log, gpu-check.json, bench-*.json)
# step limits (seconds) via TESTS_S, MEMCHECK_S, RACECHECK_S, BENCH_S; GPU_CHECK_QUICK=1 runs
# racecheck on the GEMM only and benchmarks T=4096 only.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pack=$root/.gpu/pack

do_pack() {
  set -e
  local build=${BUILD:-build-gpu}
  if [ ! -f "$build/Release/libvffn_cuda.so" ] || [ -n "${REBUILD:-}" ]; then
    npx cmake-js compile --out "$build" --CDVFFN_CUDA=ON -- -j2
  fi
  rm -rf "$pack"
  mkdir -p "$pack/build" "$pack/node_modules/tap" "$pack/bench"
  local cfg=$root/.gpu/tsconfig.json
  cat >"$cfg" <<EOF
{ "extends": "../tsconfig.json",
  "compilerOptions": { "rootDir": "..", "outDir": "pack", "declaration": false, "sourceMap": false },
  "include": ["../lib/**/*.ts", "../test/cuda-*.ts", "../bench/cuda-*.ts"] }
EOF
  npx tsc -p "$cfg"
  cp "$build/Release/versatile_ffn.node" "$build/Release/libvffn_cuda.so" "$pack/build/"
  cp bench/torch_cuda.py "$pack/bench/"
  cp scripts/gpu/tap-shim.js "$pack/node_modules/tap/index.js"
  local node_bin
  node_bin=$(command -v node)
  if [ ! -f .gpu/node.xz ] || [ "$(cat .gpu/node.version 2>/dev/null)" != "$(node --version)" ]; then
    xz -9 -T2 -c "$node_bin" >.gpu/node.xz
    node --version >.gpu/node.version
  fi
  du -sh .gpu
  local kb
  kb=$(du -sk .gpu | cut -f1)
  if [ "$kb" -gt 62000 ]; then echo "gpu-check: .gpu is ${kb} KiB, over what one call may carry (64 MiB)" >&2; exit 1; fi
  echo "packed: carry [\".gpu\"] and run: bash scripts/gpu-check.sh run"
}

do_run() {
  OUT=${OUT:-$root/.gpu/out}
  mkdir -p "$OUT"
  local log=$OUT/gpu-check.log
  : >"$log"
  say() { echo "== $*" | tee -a "$log"; }
  local bin
  bin=$(mktemp -d)
  xz -dc .gpu/node.xz >"$bin/node" && chmod +x "$bin/node"
  export PATH=$bin:$PATH:/usr/local/cuda/bin
  export VFFN_ADDON_PATH=$pack/build/versatile_ffn.node
  local quick=${GPU_CHECK_QUICK:-}
  say "$(date -u +%FT%TZ) $(node --version) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"

  local rc_load rc_ops rc_mem rc_race
  say "CUDA tests"
  timeout "${TESTS_S:-150}" node "$pack/test/cuda-loading.js" >>"$log" 2>&1
  rc_load=$?
  timeout "${TESTS_S:-150}" node "$pack/test/cuda-ops.js" >"$OUT/tests.log" 2>&1
  rc_ops=$?
  timeout "${TESTS_S:-150}" node "$pack/test/cuda-lm.js" >>"$OUT/tests.log" 2>&1 || rc_ops=$?
  cat "$OUT/tests.log" >>"$log"
  grep -E '^(not ok|# pass)' "$OUT/tests.log" | tail -20

  say "compute-sanitizer memcheck (every kernel of the op tests but the large ones)"
  VFFN_TEST_FILTER='copy|matmul|rmsnorm|dense|Versatile' timeout "${MEMCHECK_S:-150}" \
    compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 node "$pack/test/cuda-ops.js" >"$OUT/memcheck.log" 2>&1
  rc_mem=$?
  timeout "${MEMCHECK_S:-150}" compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
    node "$pack/test/cuda-lm.js" >>"$OUT/memcheck.log" 2>&1 || rc_mem=$?
  tail -5 "$OUT/memcheck.log" | tee -a "$log"

  say "compute-sanitizer racecheck (shared memory: GEMM tiles, the ordering sorts)"
  VFFN_TEST_FILTER=$([ -n "$quick" ] && echo 'matmul' || echo 'matmul|Versatile') timeout "${RACECHECK_S:-150}" \
    compute-sanitizer --tool racecheck --racecheck-report hazard --error-exitcode 9 node "$pack/test/cuda-ops.js" >"$OUT/racecheck.log" 2>&1
  rc_race=$?
  tail -5 "$OUT/racecheck.log" | tee -a "$log"

  say "benchmarks"
  local tokens
  tokens=$([ -n "$quick" ] && echo 4096 || echo 4096,8192,16384)
  timeout "${BENCH_S:-120}" node "$pack/bench/cuda-gemm.js" --tokens "$tokens" --json >"$OUT/bench-gemm.json" 2>>"$log"
  timeout "${BENCH_S:-120}" node "$pack/bench/cuda-ffn.js" --tokens "$tokens" --json >"$OUT/bench-ffn.json" 2>>"$log"
  node - "$OUT" "$rc_load" "$rc_ops" "$rc_mem" "$rc_race" <<'EOF' | tee -a "$log"
const fs = require('fs'), path = require('path')
const [out, rcLoad, rcOps, rcMem, rcRace] = process.argv.slice(2)
const read = (f) => { try { return fs.readFileSync(path.join(out, f), 'utf8') } catch { return '' } }
const last = (s) => { const l = s.trim().split('\n').pop(); try { return JSON.parse(l) } catch { return null } }
const tally = [...read('tests.log').matchAll(/# pass (\d+) fail (\d+) skip (\d+)/g)].reduce((a, m) => a.map((v, i) => v + +m[i + 1]), [0, 0, 0])
const summary = {
  date: new Date().toISOString(),
  tests: { loadingExit: +rcLoad, opsExit: +rcOps, pass: tally[0], fail: tally[1], skip: tally[2] },
  memcheck: { exit: +rcMem, summary: (read('memcheck.log').match(/ERROR SUMMARY: .*/g) || ['none']).join('; ') },
  racecheck: { exit: +rcRace, summary: (/RACECHECK SUMMARY: .*/.exec(read('racecheck.log')) || ['none'])[0] },
  benchGemm: last(read('bench-gemm.json')),
  benchFfn: last(read('bench-ffn.json')),
}
fs.writeFileSync(path.join(out, 'gpu-check.json'), JSON.stringify(summary, null, 1))
console.log(JSON.stringify({ tests: summary.tests, memcheck: summary.memcheck, racecheck: summary.racecheck }))
for (const r of summary.benchGemm?.rows ?? []) console.log(`gemm ${r.M}x${r.N}x${r.K}: ${r.tflops.toFixed(1)} TFLOP/s, torch ${r.torchTflops?.toFixed(1)}, ratio ${r.ratio?.toFixed(2)}`)
for (const r of summary.benchFfn?.rows ?? []) console.log(`ffn T=${r.T}: infer ${r.vInfer.toFixed(2)} ms (torch ${r.torchInferMs.toFixed(2)}), train ${r.vTrain.toFixed(2)} ms (torch ${r.torchTrainMs.toFixed(2)}), dense fwd ${r.denseFwd.toFixed(2)} ms`)
EOF
  rm -rf "$bin"
  [ "$rc_load" -eq 0 ] && [ "$rc_ops" -eq 0 ] && [ "$rc_mem" -eq 0 ] && [ "$rc_race" -eq 0 ]
}

case "${1:-}" in
  pack) do_pack ;;
  run) do_run ;;
  *) echo "usage: scripts/gpu-check.sh pack|run" >&2; exit 2 ;;
esac
