#!/usr/bin/env bash
# The whole CUDA check on a lent GPU in one call of at most 540 s (see bench/README.md).
#   scripts/gpu-check.sh pack   here: rebuild with CUDA (BUILD, default build-gpu), compile the CUDA
#                               tests and benchmarks to JS, bundle them with the addon, a tap
#                               stand-in and this machine's node (xz, else Python's lzma) into .gpu/
#   scripts/gpu-check.sh run    on the GPU machine (no Node, no npm there), with .gpu carried:
#                               smoke, CUDA tests, compute-sanitizer memcheck, initcheck and
#                               racecheck (exact-size allocator), benchmarks. every result goes to
#                               $OUT as soon as it exists; exit 0 only if CUDA tests ran and passed
#                               (pass > 0, skip 0), every sanitizer is clean and benchmarks gave numbers.
#                               the GEMM test also runs with VFFN_CUDA_GEMM=staged and =nosplit, and
#                               the GEMM benchmark's backward rows once more with =staged
# step limits (s): SMOKE_S 30, TESTS_S 150, MEMCHECK_S 90, INITCHECK_S 50, RACECHECK_S 60, BENCH_S 130,
# all inside GPU_CHECK_TOTAL_S 540. GPU_CHECK_QUICK=1: smaller sanitizer sets, T=4096 only.
# GPU_CHECK_KEEP_GOING=1 runs every step after a failed smoke; GPU_CHECK_DIR replaces .gpu;
# GPU_CHECK_NODE=auto|xz|lzma|raw (pack) picks how node travels (raw: local runs only, too large to carry).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${GPU_CHECK_DIR:-$root/.gpu}
pack=$dir/pack
carry_limit_kb=$((63 * 1024)) # 64 MiB per call, working tree included; 1 MiB to spare

die() { echo "gpu-check: $*" >&2; exit 1; }

# what the pack is built from: a changed source makes a carried pack stale
sources_hash() {
  (cd "$root" && find CMakeLists.txt native lib test bench scripts/gpu -type f \
    \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' -o -name '*.ts' -o -name '*.js' -o -name '*.py' -o -name CMakeLists.txt \) \
    2>/dev/null | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
}

do_pack() {
  set -e
  local build=${BUILD:-build-gpu}
  build=${build%/}
  [ -n "$build" ] && [ "$build" != "." ] || die "BUILD must name a build folder (e.g. build-gpu or build)"
  # always build: incremental in a configured folder (the build tool redoes only what changed), so
  # the pack never ships binaries older than the sources
  if [ -f "$build/CMakeCache.txt" ]; then
    grep -q '^VFFN_CUDA:STRING=OFF' "$build/CMakeCache.txt" && die "BUILD=$build was configured with VFFN_CUDA=OFF"
    cmake --build "$build" --config Release
  elif [ -e "$build" ] && [ -n "$(ls -A "$build" 2>/dev/null)" ]; then
    die "BUILD=$build is not a cmake-js build folder (no CMakeCache.txt)"
  else
    npx cmake-js compile --out "$build" --CDVFFN_CUDA=ON
  fi
  for f in versatile_ffn.node libvffn_cuda.so; do
    [ -f "$build/Release/$f" ] || die "BUILD=$build has no Release/$f: not a cmake-js build folder with CUDA (nvcc missing?)"
  done
  rm -rf "$pack" "$dir/out"
  mkdir -p "$pack/build" "$pack/node_modules/tap" "$pack/bench"
  local cfg=$dir/tsconfig.json
  cat >"$cfg" <<EOF
{ "extends": "$root/tsconfig.json",
  "compilerOptions": { "rootDir": "$root", "outDir": "$pack", "declaration": false, "sourceMap": false,
                       "typeRoots": ["$root/node_modules/@types"] },
  "include": ["$root/lib/**/*.ts", "$root/test/cuda-*.ts", "$root/bench/cuda-*.ts", "$root/bench/lm.ts"] }
EOF
  npx tsc -p "$cfg"
  rm -f "$cfg"
  cp "$build/Release/versatile_ffn.node" "$build/Release/libvffn_cuda.so" "$pack/build/"
  cp bench/torch_cuda.py "$pack/bench/"
  cp scripts/gpu/tap-shim.js "$pack/node_modules/tap/index.js"
  cp scripts/gpu/smoke.js "$pack/"
  {
    echo "sources $(sources_hash)"
    echo "packed $(date -u +%FT%TZ) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
    echo "cuda runtime (static, build) $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo unknown)"
    echo "node $(node --version)"
  } >"$pack/BUILD-INFO"

  # node: uncompressed if the whole carry fits, else xz (or Python's lzma, the same format)
  local node_bin mode=${GPU_CHECK_NODE:-auto} tree_kb node_kb
  node_bin=$(readlink -f "$(command -v node)")
  tree_kb=$(git ls-files -co --exclude-standard -z 2>/dev/null | xargs -0 du -sk 2>/dev/null | awk '{s += $1} END {print s + 0}')
  node_kb=$(du -skL "$node_bin" | cut -f1)
  local stamp="$(node --version) $(stat -Lc %s "$node_bin")"
  if [ "$mode" = auto ]; then
    if [ $((tree_kb + node_kb + $(du -sk "$pack" | cut -f1))) -le "$carry_limit_kb" ]; then mode=raw
    elif command -v xz >/dev/null; then mode=xz
    else mode=lzma; fi
  fi
  case "$mode" in
    raw) rm -f "$dir/node.xz"; cp "$node_bin" "$dir/node" ;;
    xz | lzma)
      rm -f "$dir/node"
      if [ ! -f "$dir/node.xz" ] || [ "$(cat "$dir/node.stamp" 2>/dev/null)" != "$stamp" ]; then
        echo "compressing node ($node_kb KiB, about a minute)"
        if [ "$mode" = xz ]; then xz -6 -T2 -c "$node_bin" >"$dir/node.xz.tmp"
        else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], "rb"), lzma.open(sys.argv[2], "wb", preset=6))' "$node_bin" "$dir/node.xz.tmp"; fi
        mv "$dir/node.xz.tmp" "$dir/node.xz"
        echo "$stamp" >"$dir/node.stamp"
      fi ;;
    *) die "GPU_CHECK_NODE must be auto, xz, lzma or raw" ;;
  esac
  local kb=$(($(du -sk "$dir" | cut -f1) + tree_kb))
  echo "carry: $(du -sh "$dir" | cut -f1) in $dir, working tree ${tree_kb} KiB, node $mode"
  if [ "$kb" -gt "$carry_limit_kb" ]; then
    [ "${GPU_CHECK_NODE:-}" = raw ] && { echo "packed for a local run only: ${kb} KiB is over what one call may carry"; return 0; }
    die "${kb} KiB with the working tree, over what one call may carry (64 MiB)"
  fi
  echo "packed. on the GPU machine: carry [\"$(basename "$dir")\"], timeout_s 600, command: bash scripts/gpu-check.sh run"
}

# ---- run ----
t_start=$(date +%s)
steps_json=""
verdicts=()

# seconds a step may take: its own limit, cut to what is left of the whole call (15 s kept for the end)
budget() {
  local left=$((${GPU_CHECK_TOTAL_S:-540} - ($(date +%s) - t_start) - 15))
  [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

# JSON string
js() { printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\010\013-\037' | sed 's/\\/\\\\/g; s/"/\\"/g' | tr '\n\t' '  ')"; }

# one step's record, then the summary rewritten at once: a killed run keeps every finished step
record() { # name ok|FAIL|skipped seconds note [extra-json]
  steps_json+="${steps_json:+,}{\"step\":$(js "$1"),\"result\":$(js "$2"),\"seconds\":$3,\"note\":$(js "$4")${5:+,$5}}"
  [ "$2" = ok ] || verdicts+=("$1: $4")
  echo "== $1: $2 ($3 s) $4" | tee -a "$log"
  printf '{"date":%s,"info":%s,"steps":[%s],"passed":%s}\n' "$(js "$(date -u +%FT%TZ)")" "$(js "$info")" "$steps_json" \
    "$([ ${#verdicts[@]} -eq 0 ] && echo true || echo false)" >"$OUT/gpu-check.json"
}

# the tap stand-in's last line of a test process: "# pass N fail N skip N" -> "N N N" (none: empty)
tally() { grep -E '^# pass [0-9]+ fail [0-9]+ skip [0-9]+$' "$1" | tail -1 | awk '{print $3, $5, $7}'; }

run_sanitizer() { # tool limit filter-ops args...
  local tool=$1 lim=$2 filter=$3 t0 rc=0 file=$OUT/$1.log
  shift 3
  t0=$(date +%s)
  local cs
  cs=$(command -v compute-sanitizer || true)
  if [ -z "$cs" ]; then record "$tool" FAIL 0 "compute-sanitizer not found: not run"; return; fi
  : >"$file"
  local tests=("$pack/test/cuda-ops.js")
  [ -f "$pack/test/cuda-lm.js" ] && tests+=("$pack/test/cuda-lm.js")
  local pass=0 tally_line
  for t in "${tests[@]}"; do
    local l
    l=$(budget $((lim - ($(date +%s) - t0))))
    [ "$l" -gt 5 ] || { rc=124; break; }
    echo "# $tool $(basename "$t")" >>"$file"
    local part
    part=$(mktemp)
    VFFN_CUDA_ALLOC=exact VFFN_TEST_FILTER=$filter timeout "$l" "$cs" --tool "$tool" "$@" --error-exitcode 9 \
      node "$t" 2>&1 | tee "$part" | head -c 4000000 >>"$file"
    local r=${PIPESTATUS[0]}
    [ "$r" -eq 0 ] || rc=$r
    tally_line=$(tally "$part")
    [ -z "$tally_line" ] || pass=$((pass + ${tally_line%% *}))
    rm -f "$part"
  done
  local summary
  summary=$(grep -Eo '(ERROR|RACECHECK) SUMMARY: .*' "$file" | sort | uniq -c | tr -s ' ' | paste -sd ';' -)
  if [ "$rc" -eq 0 ] && [ "$pass" -gt 0 ]; then record "$tool" ok $(($(date +%s) - t0)) "$pass checks passed; ${summary:-no summary}"
  elif [ "$rc" -eq 124 ]; then record "$tool" FAIL $(($(date +%s) - t0)) "timed out after the step's limit (raise ${tool^^}_S); ${summary:-no summary}"
  elif [ "$pass" -eq 0 ] && [ "$rc" -eq 0 ]; then record "$tool" FAIL $(($(date +%s) - t0)) "no CUDA test ran under $tool"
  else record "$tool" FAIL $(($(date +%s) - t0)) "exit $rc; ${summary:-no summary}"; fi
}

bench_numbers() { # file field -> count of rows whose field is a positive finite number, or 0
  node -e '
    const fs = require("fs"); let n = 0
    try { const l = fs.readFileSync(process.argv[1], "utf8").trim().split("\n").pop(); const j = JSON.parse(l)
      for (const r of j.rows || []) if (Number.isFinite(r[process.argv[2]]) && r[process.argv[2]] > 0) n++ } catch {}
    console.log(n)' "$1" "$2" 2>/dev/null || echo 0
}

do_run() {
  OUT=${OUT:-$dir/out}
  mkdir -p "$OUT"
  log=$OUT/gpu-check.log
  : >"$log"
  info="$(tr '\n' ';' <"$pack/BUILD-INFO" 2>/dev/null || echo 'no pack')"
  local quick=${GPU_CHECK_QUICK:-} keep=${GPU_CHECK_KEEP_GOING:-} t0 bin
  bin=$(mktemp -d)
  trap 'rm -rf "$bin"' EXIT
  echo "gpu-check run $(date -u +%FT%TZ): $info" | tee -a "$log"

  # node, the pack and its sources
  t0=$(date +%s)
  if [ -f "$dir/node" ]; then cp "$dir/node" "$bin/node"
  elif [ -f "$dir/node.xz" ] && command -v xz >/dev/null; then xz -dc "$dir/node.xz" >"$bin/node"
  elif [ -f "$dir/node.xz" ]; then python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$dir/node.xz" "$bin/node"
  fi
  chmod +x "$bin/node" 2>/dev/null
  export PATH=$bin:$PATH:/usr/local/cuda/bin
  export VFFN_ADDON_PATH=$pack/build/versatile_ffn.node
  local packed_hash now_hash
  packed_hash=$(sed -n 's/^sources //p' "$pack/BUILD-INFO" 2>/dev/null)
  now_hash=$(sources_hash)
  if ! "$bin/node" --version >/dev/null 2>&1 || [ ! -f "$VFFN_ADDON_PATH" ]; then
    record unpack FAIL $(($(date +%s) - t0)) "no usable node or addon in $dir: run 'scripts/gpu-check.sh pack' and carry $(basename "$dir")"
  elif [ -n "$now_hash" ] && [ "$packed_hash" != "$now_hash" ]; then
    record unpack FAIL $(($(date +%s) - t0)) "the pack ($packed_hash) is stale: the sources here are $now_hash; pack again"
  else
    record unpack ok $(($(date +%s) - t0)) "node $("$bin/node" --version), sources $packed_hash"
  fi
  if [ ${#verdicts[@]} -gt 0 ] && [ -z "$keep" ]; then finish; return; fi

  # 1. smoke: the machine and one parity check, in seconds
  t0=$(date +%s)
  local gpu smoke
  gpu=$(timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
  gpu+="; driver's CUDA $(timeout 10 nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | head -1 | cut -d' ' -f3)"
  echo "gpu: $gpu" | tee -a "$log"
  smoke=$(timeout "$(budget "${SMOKE_S:-30}")" node "$pack/smoke.js" "$pack/lib" 2>&1 | tail -1)
  echo "smoke: $smoke" | tee -a "$log"
  if echo "$smoke" | grep -q '"ok":true'; then record smoke ok $(($(date +%s) - t0)) "$gpu" "\"detail\":$smoke"
  else record smoke FAIL $(($(date +%s) - t0)) "CUDA does not work here ($gpu): no CUDA test ran" "\"detail\":$(js "$smoke")"; fi
  if [ ${#verdicts[@]} -gt 0 ] && [ -z "$keep" ]; then finish; return; fi

  # 2. the CUDA tests (the same tests users run); the op tests must all run, none skip
  t0=$(date +%s)
  : >"$OUT/tests.log"
  local lim=${TESTS_S:-150} op_pass=0 op_fail=0 op_skip=0 bad="" f
  # every test file once; the GEMM's load-path test again on the old register-staged dispatch
  # and without split-K (VFFN_CUDA_GEMM, read once per process)
  local runs=() f
  for f in "$pack"/test/cuda-*.js; do runs+=("auto:$f"); done
  [ -f "$pack/test/cuda-gemm.js" ] && runs+=("staged:$pack/test/cuda-gemm.js" "nosplit:$pack/test/cuda-gemm.js")
  local run path name
  for run in "${runs[@]}"; do
    local l part rc tl
    path=${run%%:*} f=${run#*:}
    name=$(basename "$f" .js)$([ "$path" = auto ] || echo " ($path)")
    l=$(budget $((lim - ($(date +%s) - t0))))
    if [ "$l" -le 5 ]; then bad+=" $name: no time left;"; continue; fi
    part=$(mktemp)
    echo "# $name" >>"$OUT/tests.log"
    VFFN_CUDA_GEMM=$([ "$path" = auto ] || echo "$path") timeout "$l" node "$f" 2>&1 | tee "$part" >>"$OUT/tests.log"
    rc=${PIPESTATUS[0]}
    tl=$(tally "$part")
    rm -f "$part"
    [ -n "$tl" ] || tl="0 1 0"
    read -r p fl sk <<<"$tl"
    [ "$rc" -eq 0 ] && [ "$fl" -eq 0 ] || bad+=" $name: exit $rc, $fl failed;"
    # cuda-loading skips by design where a GPU is present (the no-GPU path) or sources are absent
    if [ "$(basename "$f")" != cuda-loading.js ]; then
      op_pass=$((op_pass + p)) op_fail=$((op_fail + fl)) op_skip=$((op_skip + sk))
    fi
  done
  grep -E '^(not ok|# pass)' "$OUT/tests.log" | tail -20 >>"$log"
  local counts="\"pass\":$op_pass,\"fail\":$op_fail,\"skip\":$op_skip"
  if [ "$op_pass" -eq 0 ] || [ "$op_skip" -gt 0 ]; then
    record tests FAIL $(($(date +%s) - t0)) "no CUDA test ran in full (op tests: pass $op_pass, skip $op_skip);$bad" "$counts"
  elif [ -n "$bad" ]; then record tests FAIL $(($(date +%s) - t0)) "$bad" "$counts"
  else record tests ok $(($(date +%s) - t0)) "op tests: pass $op_pass, skip 0" "$counts"; fi

  # 3. compute-sanitizer with every block exactly as large as asked and never reused
  run_sanitizer memcheck "$(budget "${MEMCHECK_S:-90}")" \
    "$([ -n "$quick" ] && echo 'matmul|rmsnorm' || echo 'copy|matmul|rmsnorm|dense|Versatile|embedding|cross-entropy')" --leak-check no
  run_sanitizer initcheck "$(budget "${INITCHECK_S:-50}")" "$([ -n "$quick" ] && echo 'matmul' || echo 'matmul|rmsnorm|Versatile|embedding')"
  run_sanitizer racecheck "$(budget "${RACECHECK_S:-60}")" "$([ -n "$quick" ] && echo 'matmul' || echo 'matmul|Versatile')" \
    --racecheck-report hazard

  # 4. benchmarks: they must produce numbers
  t0=$(date +%s)
  local tokens b lb
  tokens=${GPU_CHECK_TOKENS:-$([ -n "$quick" ] && echo 4096 || echo 4096,16384)}
  lim=${BENCH_S:-130}
  for b in gemm gemm-staged ffn; do
    case $b in
      gemm) lb=$(budget $((lim * 2 / 5))) ;;
      gemm-staged) lb=$(budget $((lim / 6))) ;;
      *) lb=$(budget $((lim - ($(date +%s) - t0)))) ;;
    esac
    : >"$OUT/bench-$b.json"
    [ "$lb" -gt 5 ] || continue
    if [ "$b" = gemm-staged ]; then  # the old register-staged backward, beside the new one (one T, no torch)
      VFFN_CUDA_GEMM=staged timeout "$lb" node "$pack/bench/cuda-gemm.js" --tokens "${tokens%%,*}" --torch 0 --forward 0 --json \
        >"$OUT/bench-$b.json" 2>>"$log"
    else
      timeout "$lb" node "$pack/bench/cuda-$b.js" --tokens "$tokens" --json >"$OUT/bench-$b.json" 2>>"$log"
    fi
  done
  local ng nf
  ng=$(bench_numbers "$OUT/bench-gemm.json" tflops)
  nf=$(bench_numbers "$OUT/bench-ffn.json" vInfer)
  if [ "$ng" -gt 0 ] && [ "$nf" -gt 0 ]; then record bench ok $(($(date +%s) - t0)) "gemm rows $ng, ffn rows $nf"
  else record bench FAIL $(($(date +%s) - t0)) "no numbers (gemm rows $ng, ffn rows $nf; see gpu-check.log)"; fi
  node -e '
    const fs = require("fs"), out = process.argv[1]
    const last = (f) => { try { return JSON.parse(fs.readFileSync(out + "/" + f, "utf8").trim().split("\n").pop()) } catch { return null } }
    for (const r of last("bench-gemm.json")?.rows ?? []) console.log(`gemm ${r.M}x${r.N}x${r.K}: ${r.tflops.toFixed(1)} TFLOP/s, torch ${r.torchTflops?.toFixed(1)}, ratio ${r.ratio?.toFixed(2)}`)
    const staged = last("bench-gemm-staged.json")?.backward ?? []
    for (const r of last("bench-gemm.json")?.backward ?? []) {
      const o = staged.find((s) => s.T === r.T && s.layer === r.layer)
      const f = (v) => (Number.isFinite(v) ? v.toFixed(1) : "-")
      console.log(`gemm ${r.layer} T=${r.T} TFLOP/s: fwd ${f(r.fwd_bf16)}, dX ${f(r.dx_bf16)}, dW ${f(r.dw_bf16)} bf16 (staged: dX ${f(o?.dx_bf16)}, dW ${f(o?.dw_bf16)}); fwd ${f(r.fwd_f32)}, dX ${f(r.dx_f32)}, dW ${f(r.dw_f32)} f32 (staged: dW ${f(o?.dw_f32)})`)
    }
    for (const r of last("bench-ffn.json")?.rows ?? []) console.log(`ffn T=${r.T}: infer ${r.vInfer.toFixed(2)} ms (torch ${r.torchInferMs.toFixed(2)}), train ${r.vTrain.toFixed(2)} ms (torch ${r.torchTrainMs.toFixed(2)}), dense fwd ${r.denseFwd.toFixed(2)} ms`)' "$OUT" 2>/dev/null | tee -a "$log"
  # 5. the training benchmark (one 354M block, T = 1024, every precision and recompute mode), with
  # whatever time is left (BENCH_LM_S, default 45): informational, not part of the verdict
  lb=$(budget "${BENCH_LM_S:-45}")
  if [ "$lb" -gt 10 ]; then
    timeout "$lb" node "$pack/bench/lm.js" --device cuda --parts block --seq 1024 --steps 3 --json >"$OUT/bench-lm.json" 2>>"$log" ||
      echo "bench lm: no complete result in ${lb} s" | tee -a "$log"
  else
    echo "bench lm: skipped, ${lb} s left" | tee -a "$log"
  fi
  finish
}

finish() {
  if [ ${#verdicts[@]} -eq 0 ]; then
    echo "gpu-check: passed in $(($(date +%s) - t_start)) s" | tee -a "$log"
  else
    echo "gpu-check: FAILED in $(($(date +%s) - t_start)) s:" | tee -a "$log"
    printf '  %s\n' "${verdicts[@]}" | tee -a "$log"
    exit 1
  fi
}

case "${1:-}" in
  pack) do_pack ;;
  run) do_run ;;
  *) echo "usage: scripts/gpu-check.sh pack|run" >&2; exit 2 ;;
esac
