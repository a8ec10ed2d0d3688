#!/usr/bin/env bash
# GPU code checks that need no GPU (CI runs them after the build):
#  1. every GEMM kernel's PTX (sm_80 and sm_90a) uses tensor-core instructions (mma.sync or wgmma);
#  2. ptxas -v reports no register spills and no stack frame (local memory) in any kernel: every
#     kernel of this backend sits on a training or inference step;
#  3. the GEMM's load-mode variants (native/cuda/gemm.cu): cp.async where an operand is copied
#     asynchronously, ldmatrix .trans where a bf16 operand stays MN-major, all 34 present.
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

# one job per (file, target): a cubin with the ptxas report for spills, keeping the PTX it was
# assembled from for the mma check (one front-end pass per target instead of two)
jobs_file="$work/jobs"
: >"$jobs_file"
for f in "${files[@]}"; do
  b=$(basename "$f" .cu)
  for arch in 80 90a; do
    echo "$f $arch $work/$b.$arch" >>"$jobs_file"
  done
done
export NVCC work
export FLAGS="${flags[*]}"
run_job() {
  set -- $1
  local keep="$3.keep" b
  b=$(basename "$1" .cu)
  mkdir -p "$keep"
  $NVCC $FLAGS -cubin -gencode=arch=compute_$2,code=sm_$2 -Xptxas -v --keep --keep-dir "$keep" -o "$3.cubin" "$1" 2>"$3.ptxas"
  mv "$keep/$b.ptx" "$3.ptx"
  rm -rf "$keep"
}
export -f run_job
start=$(date +%s)
if ! tr '\n' '\0' <"$jobs_file" | xargs -0 -P "$JOBS" -I{} bash -c 'run_job "$@" || { echo "compile failed: $@" >&2; exit 255; }' _ {}; then
  echo "check-cuda: compilation failed" >&2
  exit 1
fi

status=0
# 1. tensor-core instructions in every GEMM entry point's PTX; in the GEMM variants that load an
#    operand with cp.async (gemm_kernel<S, MA, MB> with a LoadMode of KA = 0 or NA = 2) the
#    cp.async instructions, and in the bf16 variants that keep an MN-major tile as stored (NA = 2,
#    NS = 3) ldmatrix .trans; the old transposing variant (TS = 4) has neither
for ptx in "$work"/*.ptx; do
  report=$(awk '
    /^(\.visible )?\.entry / { name = $NF; sub(/\(.*/, "", name); mma[name] = cpa[name] = trn[name] = 0; cur = name; next }
    /^(\.visible |\.weak )?\.func / { cur = "" }
    cur != "" && /(mma\.sync|wgmma\.mma_async)/ { mma[cur]++ }
    cur != "" && /cp\.async\.(cg|ca)\.shared\.global/ { cpa[cur]++ }
    cur != "" && /ldmatrix\.sync\.aligned\.m8n8\.x4\.trans/ { trn[cur]++ }
    END { for (e in mma) print e, mma[e], cpa[e], trn[e] }' "$ptx")
  while read -r name count cpasync trans; do
    [ -n "$name" ] || continue
    pretty=$(echo "$name" | demangle | sed -E 's/\(anonymous namespace\):://g; s/\([^()]*\)$//')
    if echo "$pretty" | grep -qi gemm; then
      if [ "$count" -gt 0 ]; then
        echo "ok   $(basename "$ptx"): $count tensor-core instructions in $pretty"
      else
        echo "FAIL $(basename "$ptx"): no mma/wgmma in GEMM kernel $pretty"
        status=1
      fi
    fi
    # the load modes from the mangled template arguments: gemm_kernelI<f|t>Li<MA>ELi<MB>E
    if [[ "$name" =~ gemm_kernelI([ft])Li([0-9])ELi([0-9])E ]]; then
      s=${BASH_REMATCH[1]} ma=${BASH_REMATCH[2]} mb=${BASH_REMATCH[3]}
      want_cp=0 want_trans=0
      { [ "$ma" = 0 ] || [ "$ma" = 2 ] || [ "$mb" = 0 ] || [ "$mb" = 2 ]; } && want_cp=1
      [ "$s" = t ] && { [ "$ma" = 2 ] || [ "$ma" = 3 ] || [ "$mb" = 2 ] || [ "$mb" = 3 ]; } && want_trans=1
      if [ "$want_cp" = 1 ] && [ "$cpasync" -eq 0 ]; then
        echo "FAIL $(basename "$ptx"): no cp.async in $pretty"; status=1
      elif [ "$want_cp" = 0 ] && [ "$cpasync" -gt 0 ]; then
        echo "FAIL $(basename "$ptx"): cp.async in the register-staged $pretty"; status=1
      fi
      if [ "$want_trans" = 1 ] && [ "$trans" -eq 0 ]; then
        echo "FAIL $(basename "$ptx"): no ldmatrix .trans in $pretty (an MN-major bf16 tile)"; status=1
      elif [ "$want_trans" = 0 ] && [ "$trans" -gt 0 ]; then
        echo "FAIL $(basename "$ptx"): ldmatrix .trans in $pretty, which keeps no MN-major bf16 tile"; status=1
      fi
      [ "$want_cp$want_trans" = 00 ] || echo "ok   $(basename "$ptx"): $cpasync cp.async, $trans ldmatrix.trans in $pretty"
    fi
  done <<<"$report"
done
# every load-mode variant must exist: 16 combinations of KA, KS, NA, NS and the old TS x TS, per tile type
for ptx in "$work"/gemm.*.ptx; do
  [ -f "$ptx" ] || continue
  n=$(grep -Eo 'gemm_kernelI[ft]Li[0-9]ELi[0-9]E' "$ptx" | sort -u | wc -l)
  if [ "$n" -ne 34 ]; then echo "FAIL $(basename "$ptx"): $n GEMM load-mode variants, expected 34"; status=1
  else echo "ok   $(basename "$ptx"): all 34 GEMM load-mode variants"; fi
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
      pending = 1
    }
    /Used [0-9]+ registers/ && pending {
      match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15)
      bad = (st + ld + stack > 0)
      printf "%s %s %s: %d registers, stack %d, spill stores %d, spill loads %d\n", bad ? "FAIL" : "ok  ", file, name, regs, stack, st, ld
      name = ""; pending = 0
    }' "$rep" | demangle | sed -E 's/\(anonymous namespace\):://g; s/\([^()]*\): ([0-9]+ registers)/: \1/' >"$rep.summary"
  cat "$rep.summary"
  if grep -q '^FAIL' "$rep.summary"; then status=1; fi
done
echo "check-cuda: $((${#files[@]})) files, $(( $(date +%s) - start )) s, $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
