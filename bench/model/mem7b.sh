#!/bin/sh
# Memory check: a random-weight bf16 PRM trunk with the Qwen2.5-7B shape (H 3584, 28 layers, FFN 18944, 28/4
# heads, vocab 152064; 15.2 GB) scores an 8,192-token sequence; prints the peak RSS (/usr/bin/time -v).
# Goal: peak RSS <= 17 GB.  From the repository root:
#   sh bench/model/mem7b.sh                  the full 28 layers (15 GB written to $BUILD/models, needs ~16 GB free)
#   LAYERS=2 sh bench/model/mem7b.sh         a 2-layer cut of the same shape (fast): peak RSS minus its weights is
#                                            the activation/scratch overhead, which does not depend on the depth
# Env: BUILD (default build-bench), LAYERS (28), T (8192), THREADS (2), PRECISION (exact | fast; default
#      exact, the library default).  Needs no torch (python3 only).
set -eu
BUILD=${BUILD:-build-bench}
LAYERS=${LAYERS:-28}
T=${T:-8192}
THREADS=${THREADS:-2}
PRECISION=${PRECISION:-exact}
D=$BUILD/models/qwen2-7b-shape-L$LAYERS
make -s BUILD="$BUILD" -j2 "$BUILD/fluxprm" >/dev/null
if [ ! -f "$D/model.safetensors" ]; then
  need_kb=$(( (LAYERS * 466 + 1100) * 1024 + 1048576 ))  # ~466 MB per layer + 1.09 GB embedding, + 1 GB slack
  avail_kb=$(df -Pk "$BUILD" | awk 'NR == 2 { print $4 }')
  [ "$avail_kb" -gt "$need_kb" ] || { echo "mem7b: SKIPPED: needs $((need_kb / 1048576)) GB free in $BUILD" >&2; exit 0; }
  python3 bench/model/write_random_st.py "$D" 3584 "$LAYERS" 18944 28 4 152064
fi
log=$(mktemp)
/usr/bin/time -v "$BUILD/fluxprm" bench --model "$D" --tokens "$T" --threads "$THREADS" --repeat 1 --warmup 0 \
  --precision "$PRECISION" --no-profile 2> "$log"
grep -E "Maximum resident|Elapsed \(wall" "$log"
wb=$(stat -c %s "$D/model.safetensors")
rss_kb=$(awk -F: '/Maximum resident/ { gsub(/ /, "", $2); print $2 }' "$log")
eb=$((152064 * 3584 * 2)) # the embedding table: only the rows of the T ids are ever touched
echo "mem7b: layers $LAYERS, T=$T, precision $PRECISION: peak RSS $((rss_kb / 1024)) MiB; weights file $((wb / 1048576)) MiB, of which" \
     "$(( (wb - eb) / 1048576 )) MiB outside the embedding; RSS minus those = $(( rss_kb / 1024 - (wb - eb) / 1048576 )) MiB" \
     "(activations, scratch, touched embedding rows, runtime)"
if [ "$LAYERS" != 28 ]; then
  echo "mem7b: projected 28-layer peak RSS = $(( rss_kb / 1024 + (28 - LAYERS) * 233000000 * 2 / 1048576 )) MiB" \
       "(+ 233.0 M bf16 parameters per extra layer)"
fi
rm -f "$log"
