#!/bin/sh
# Attention benchmark: fp_attention_forward_ex exact (f32) and fast (bf16 / AMX) paths and the one-row f32
# kernel they replaced, vs PyTorch scaled_dot_product_attention (f32 and bf16) on the same shapes, same run.
# Usage (from the repository root):
#   sh bench/attention/run.sh [--quick] [extra bench_attention args, e.g. --paths exact,fast]
# Env: BUILD (default build; the library is built with make BUILD=$BUILD), THREADS (default "1 2"),
#      REPS (default 5), PYREF (default /work/shared/tools/pyref; torch lines are skipped without it).
set -eu
BUILD=${BUILD:-build}
THREADS=${THREADS:-"1 2"}
REPS=${REPS:-5}
PYREF=${PYREF:-/work/shared/tools/pyref}
SHAPES="14/2/64/512 14/2/64/2048 14/2/64/8192 12/2/128/512 12/2/128/2048 12/2/128/8192"
if [ "${1:-}" = "--quick" ]; then shift; SHAPES="14/2/64/512 14/2/64/2048 12/2/128/2048"; fi
BIN="$BUILD/bench/attention/bench_attention"
make -s BUILD="$BUILD" "$BIN" >/dev/null
sargs=""
for s in $SHAPES; do sargs="$sargs --shape $s"; done
out=$(mktemp)
for th in $THREADS; do
  "$BIN" --threads "$th" --reps "$REPS" $sargs "$@" | tee -a "$out"
  if [ -x "$PYREF" ]; then
    "$PYREF" run bench/attention/torch_attention.py "$th" "$REPS" $SHAPES | tee -a "$out" || true
  else
    echo "# $PYREF not found: torch timings skipped"
  fi
done
echo
echo "# GFLOP/s (flops = 4 d nh T(T+1)/2): median wall, and cpu = flops / (median CPU time / threads)."
echo "# x rows: / the one-row f32 kernel (same shape, threads); x torch: exact / torch f32, fast / torch bf16 sdpa"
awk '
  /^#/ { next }
  { key = $2 " " $3 " " $4 " " $5 " " $6 }
  $1 == "rows" { rw[key] = $7; rc[key] = $10 }
  $1 ~ /^torch-/ { tw[$1 " " key] = $7; tc[$1 " " key] = $10; next }
  { line[n++] = $0 }
  END {
    printf "%-11s %3s %3s %4s %6s %3s %9s %9s %10s %10s %10s %10s\n", "path", "nh", "nkv", "d", "T", "thr",
           "GFLOP/s", "cpu", "x rows", "x rows cpu", "x torch", "x torch cpu"
    for (i = 0; i < n; i++) {
      split(line[i], f, " ")
      key = f[2] " " f[3] " " f[4] " " f[5] " " f[6]
      tk = (f[1] == "fast" ? "torch-bf16" : "torch-f32") " " key
      printf "%-11s %3s %3s %4s %6s %3s %9s %9s %10s %10s %10s %10s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[10],
             rw[key] ? sprintf("%.2f", f[7] / rw[key]) : "-", rc[key] ? sprintf("%.2f", f[10] / rc[key]) : "-",
             tw[tk] ? sprintf("%.2f", f[7] / tw[tk]) : "-", tc[tk] ? sprintf("%.2f", f[10] / tc[tk]) : "-"
    }
    for (k in tw) {
      split(k, g, " ")
      printf "%-11s %3s %3s %4s %6s %3s %9s %9s\n", g[1], g[2], g[3], g[4], g[5], g[6], tw[k], tc[k]
    }
  }' "$out" | { read -r hdr; echo "$hdr"; sort -k6,6n -k4,4n -k5,5n -k1,1; }
rm -f "$out"
