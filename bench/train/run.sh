#!/bin/sh
# Training-step benchmark: fluxprm (bench_train.c) vs PyTorch (torch_step.py, HF Qwen2Model + score head, f32,
# AdamW) on the same random-weight Qwen2 0.5B shape (hidden 896, FFN 4864, 14/2 heads), one joint-loss step
# (forward + backward + clip + AdamW) per record of T tokens, median over STEPS steps after one warm-up step,
# run in the same invocation, interleaved (round r runs each peer once), then tokens/s, the ratio
# fluxprm/torch (wall tokens/s, and CPU seconds per step, which discounts preemption on a shared machine) and
# the peak RSS of both.  From the repository root:
#   sh bench/train/run.sh              full: 24 layers, T=1024, vocab 151936
#   QUICK=1 sh bench/train/run.sh      2 layers, T=1024, vocab 8192 (the embedding only feeds the PRM head's
#                                      trunk: gather forward, scatter backward, AdamW over it)
# Env: BUILD (default build; the library is built with make BUILD=$BUILD), LAYERS, T, VOCAB, STEPS (3),
#      THREADS (2), R (rounds, 1), PYREF.  Without pyref the torch side is skipped, visibly.
set -eu
BUILD=${BUILD:-build}
PYREF=${PYREF:-/work/shared/tools/pyref}
if [ "${QUICK:-0}" = 1 ]; then LAYERS=${LAYERS:-2}; VOCAB=${VOCAB:-8192}
else LAYERS=${LAYERS:-24}; VOCAB=${VOCAB:-151936}; fi
T=${T:-1024}
STEPS=${STEPS:-3}
THREADS=${THREADS:-2}
R=${R:-1}
if [ "${NO_MAKE:-0}" != 1 ]; then make -s BUILD="$BUILD" "$BUILD/libfluxprm.a" >/dev/null; fi
CC=${CC:-gcc}
BIN="$BUILD/bench/bench_train"
mkdir -p "$BUILD/bench"
$CC -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Iinclude -Isrc bench/train/bench_train.c \
    "$BUILD/libfluxprm.a" $(pkg-config --libs jansson libpcre2-8 libutf8proc libcurl libmicrohttpd) -lm -fopenmp \
    -o "$BIN"
out=$(mktemp)
echo "# bench/train: layers $LAYERS, T $T, vocab $VOCAB, steps $STEPS (+1 warm-up), threads $THREADS, rounds $R; $(uptime)"
r=0
while [ "$r" -lt "$R" ]; do
  "$BIN" --layers "$LAYERS" --T "$T" --vocab "$VOCAB" --steps "$STEPS" --threads "$THREADS" | tee -a "$out"
  if [ -x "$PYREF" ]; then
    "$PYREF" run bench/train/torch_step.py "$LAYERS" "$T" "$VOCAB" "$STEPS" "$THREADS" | tee -a "$out" || true
  else
    echo "bench/train: torch SKIPPED (no pyref at $PYREF)"
  fi
  r=$((r + 1))
done
echo "# $(uptime)"
awk '
  /^fluxprm / || /^torch / {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    k = ++n[$1]; tps[$1, k] = v["tokens_per_s"] + 0; cpu[$1, k] = v["cpu_s"] + 0
    if (v["peak_rss_mb"] + 0 > rss[$1]) rss[$1] = v["peak_rss_mb"] + 0
  }
  function med(arr, p,   k, i, j, a, t) {
    k = n[p]; for (i = 1; i <= k; i++) a[i] = arr[p, i]
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
  }
  END {
    printf "%-8s %12s %14s %12s\n", "peer", "tokens/s", "cpu s/step", "peak RSS MB"
    for (p in n) printf "%-8s %12.1f %14.2f %12.0f\n", p, med(tps, p), med(cpu, p), rss[p]
    if (n["fluxprm"] && n["torch"]) {
      printf "ratio fluxprm/torch, tokens/s (wall): %.2fx\n", med(tps, "fluxprm") / med(tps, "torch")
      if (med(cpu, "fluxprm") > 0)
        printf "ratio torch/fluxprm, CPU seconds per step: %.2fx\n", med(cpu, "torch") / med(cpu, "fluxprm")
    }
  }' "$out"
rm -f "$out"
