#!/bin/sh
# GEMM benchmark: fp_matmul_forward per kernel path vs the scalar reference and vs PyTorch, same shapes,
# same run.  Usage (from the repository root):
#   sh bench/gemm/run.sh [--quick] [extra bench_gemm args, e.g. --dtypes BF16 --shape 512x896x896]
# Env: BUILD (default build; the library is built with make BUILD=$BUILD), THREADS (default "1 2"),
#      REPS (default 7), GEMM_SHAPES (space-separated TxKxN list replacing the default shapes),
#      PYREF (default /work/shared/tools/pyref; torch columns are skipped without it),
#      BLAS=1: build with OpenBLAS (`make BLAS=1`; use its own BUILD, e.g. BLAS=1 BUILD=build-blas; needs
#      scripts/install-deps.sh --blas): F32 rows then come in pairs, our kernel and "openblas-sgemm" (cblas_sgemm
#      forced on) from the same run, and the "x ours" column gives openblas / ours (docs/architecture.md).
set -eu
BUILD=${BUILD:-build}
THREADS=${THREADS:-"1 2"}
REPS=${REPS:-7}
PYREF=${PYREF:-/work/shared/tools/pyref}
# Qwen2.5-0.5B projections (K=896: N=896,128,4864; K=4864: N=896) and 1.5B (K=1536: N=1536,8960; K=8960: N=1536)
SHAPES="512x896x896 512x896x128 512x896x4864 512x4864x896 2048x896x896 2048x896x128 2048x896x4864 2048x4864x896"
SHAPES="$SHAPES 512x1536x1536 512x1536x8960 512x8960x1536 2048x1536x1536 2048x1536x8960 2048x8960x1536"
if [ -n "${GEMM_SHAPES:-}" ]; then SHAPES=$GEMM_SHAPES; fi
if [ "${1:-}" = "--quick" ]; then shift; SHAPES="512x896x896 512x4864x896"; fi
BIN="$BUILD/bench/gemm/bench_gemm"
make -s BUILD="$BUILD" ${BLAS:+BLAS="$BLAS"} "$BIN" >/dev/null
sargs=""
for s in $SHAPES; do sargs="$sargs --shape $s"; done
out=$(mktemp)
for th in $THREADS; do
  "$BIN" --threads "$th" --reps "$REPS" $sargs "$@" | tee -a "$out"
  if [ -x "$PYREF" ]; then
    "$PYREF" run bench/gemm/torch_gemm.py "$th" "$REPS" $SHAPES | tee -a "$out" || true
  fi
done
echo
echo "# ratios: GFLOP/s of each fast path / scalar ref (same dtype, K, N, threads; ref timed at small T),"
echo "#         / torch (bf16 matmul for BF16 weights, f32 matmul otherwise; same T, K, N, threads);"
echo "#         x ours (BLAS=1 builds): openblas-sgemm / our f32 kernel on the row above (same run)"
awk '
  /^#/ { next }
  $1 == "ref" { ref[$2 " " $4 " " $5 " " $6] = $7; next }
  $1 ~ /^torch-/ { torch[$1 " " $2 " " $3 " " $4 " " $5] = $6; next }
  { line[n++] = $0 }
  END {
    printf "%-16s %-5s %5s %5s %5s %3s %9s %8s %8s %7s\n", "path", "dtype", "T", "K", "N", "thr", "GFLOP/s", "x ref",
           "x torch", "x ours"
    for (i = 0; i < n; i++) {
      split(line[i], f, " ")
      r = ref[f[2] " " f[4] " " f[5] " " f[6]]
      tk = (f[2] == "BF16" ? "torch-bf16" : "torch-f32") " " f[3] " " f[4] " " f[5] " " f[6]
      t = torch[tk]
      xo = f[11] ~ /^x-ours=/ ? substr(f[11], 8) : "-"
      printf "%-16s %-5s %5s %5s %5s %3s %9s %8s %8s %7s\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7],
             r ? sprintf("%.1f", f[7] / r) : "-", t ? sprintf("%.2f", f[7] / t) : "-", xo
    }
  }' "$out"
rm -f "$out"
