#!/usr/bin/env bash
# GPU code checks that need no GPU (CI runs them after the build):
#  1. every GEMM kernel's PTX (sm_80 and sm_90a) uses tensor-core instructions (mma.sync or wgmma);
#  2. ptxas -v reports no register spills and no stack frame (local memory) in any kernel: every
#     kernel of this backend sits on a training or inference step.
# usage: scripts/check-cuda.sh [file.cu ...]   (default: every native/cuda/*.cu)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
JOBS=${JOBS:-2}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(native/cuda/*.cu)
flags=(-std=c++17 -O3 --use_fast_math -Inative)
demangle() { if command -v c++filt >/dev/null; then c++filt; else cat; fi; }

# one job per (file, target): PTX for the mma check, a cubin with the ptxas report for spills
jobs_file="$work/jobs"
: >"$jobs_file"
for f in "${files[@]}"; do
  b=$(basename "$f" .cu)
  for arch in 80 90a; do
    echo "ptx $f $arch $work/$b.$arch.ptx" >>"$jobs_file"
    echo "cubin $f $arch $work/$b.$arch.ptxas" >>"$jobs_file"
  done
done
export NVCC work
export FLAGS="${flags[*]}"
run_job() {
  set -- $1
  if [ "$1" = ptx ]; then
    $NVCC $FLAGS -ptx -gencode=arch=compute_$3,code=compute_$3 -o "$4" "$2"
  else
    $NVCC $FLAGS -cubin -gencode=arch=compute_$3,code=sm_$3 -Xptxas -v -o "$4.cubin" "$2" 2>"$4"
  fi
}
export -f run_job
start=$(date +%s)
if ! tr '\n' '\0' <"$jobs_file" | xargs -0 -P "$JOBS" -I{} bash -c 'run_job "$@" || { echo "compile failed: $@" >&2; exit 255; }' _ {}; then
  echo "check-cuda: compilation failed" >&2
  exit 1
fi

status=0
# 1. tensor-core instructions in every GEMM entry point's PTX
for ptx in "$work"/*.ptx; do
  report=$(awk '
    /^(\.visible )?\.entry / { name = $NF; sub(/\(.*/, "", name); entries[name] = 0; cur = name; next }
    /^(\.visible |\.weak )?\.func / { cur = "" }
    cur != "" && /(mma\.sync|wgmma\.mma_async)/ { entries[cur]++ }
    END { for (e in entries) print e, entries[e] }' "$ptx")
  while read -r name count; do
    [ -n "$name" ] || continue
    pretty=$(echo "$name" | demangle | sed -E 's/\(anonymous namespace\):://g; s/\([^()]*\)$//')
    if echo "$name" | grep -qi gemm; then
      if [ "$count" -gt 0 ]; then
        echo "ok   $(basename "$ptx"): $count tensor-core instructions in $pretty"
      else
        echo "FAIL $(basename "$ptx"): no mma/wgmma in GEMM kernel $pretty"
        status=1
      fi
    fi
  done <<<"$report"
done

# 2. spills and stack frames from the ptxas report
for rep in "$work"/*.ptxas; do
  awk -v file="$(basename "$rep" .ptxas)" '
    /Compiling entry function/ { match($0, /\047[^\047]+\047/); name = substr($0, RSTART + 1, RLENGTH - 2) }
    /bytes stack frame/ {
      n = split($0, w, /[ ,]+/)
      stack = st = ld = 0
      for (i = 1; i + 3 <= n; i++) {
        if (w[i + 1] == "bytes" && w[i + 2] == "stack") stack = w[i]
        if (w[i + 1] == "bytes" && w[i + 2] == "spill" && w[i + 3] == "stores") st = w[i]
        if (w[i + 1] == "bytes" && w[i + 2] == "spill" && w[i + 3] == "loads") ld = w[i]
      }
      if (name == "") next
      bad = (st + ld + stack > 0)
      printf "%s %s %s: stack %d, spill stores %d, spill loads %d\n", bad ? "FAIL" : "ok  ", file, name, stack, st, ld
      name = ""
    }' "$rep" | demangle | sed -E 's/\(anonymous namespace\):://g; s/\([^()]*\): stack/: stack/' >"$rep.summary"
  cat "$rep.summary"
  if grep -q '^FAIL' "$rep.summary"; then status=1; fi
done
echo "check-cuda: $((${#files[@]})) files, $(( $(date +%s) - start )) s, $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
