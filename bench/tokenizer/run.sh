#!/bin/sh
# Tokenizer benchmark: `fluxprm tokenize` vs HF tokenizers (single thread) on a ~10 MB mixed corpus.
# Builds the corpus, times both, checks that the ids agree, and prints the throughput ratio.
# usage (from the repository root): sh bench/tokenizer/run.sh [MB]     env: BUILD (default build), PYREF
set -e
MB=${1:-10}
BUILD=${BUILD:-build}
PYREF=${PYREF:-/work/shared/tools/pyref}
SHARED=${FLUXPRM_SHARED:-../shared}
TOK=$SHARED/data/tokenizer/qwen2
W=tests/tmp/bench-tokenizer
[ -f "$TOK/tokenizer.json" ] || { echo "needs $TOK/tokenizer.json" >&2; exit 2; }
make -s BUILD="$BUILD" -j2 "$BUILD/fluxprm" >/dev/null
mkdir -p "$W"
cp "$TOK/tokenizer.json" "$TOK/tokenizer_config.json" "$W/"
[ -f "$W/corpus-$MB.jsonl" ] || python3 bench/tokenizer/make_corpus.py "$SHARED/data" "$W/corpus-$MB.jsonl" "$MB"
# ours: whole process (load + JSON parsing + encoding + output), best of 3
best=$(python3 - "$BUILD/fluxprm" "$W" "$MB" <<'PY'
import os, subprocess, sys, time
b, w, mb = sys.argv[1:4]
best, best_cpu = None, None
for _ in range(3):
    t0 = time.perf_counter()
    with open(f"{w}/ours.jsonl", "w") as out:
        p = subprocess.Popen([b, "tokenize", "--quiet", "--tokenizer", w, f"{w}/corpus-{mb}.jsonl"], stdout=out)
        _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        sys.exit("fluxprm tokenize failed")
    t, cpu = time.perf_counter() - t0, ru.ru_utime + ru.ru_stime
    best = t if best is None else min(best, t)
    best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
print(best, best_cpu)
PY
)
# HF: encode calls only (excludes Python start-up, loading and JSON parsing)
hf=$("$PYREF" run bench/tokenizer/hf_tokenize.py "$W/tokenizer.json" "$W/corpus-$MB.jsonl" "$W/hf.jsonl" | tail -n 1)
hf_s=$(echo "$hf" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(min(d["encode_s"], d["batch_s_est"]), d["encode_cpu_s"])')
bytes=$(echo "$hf" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
if cmp -s "$W/ours.jsonl" "$W/hf.jsonl"; then agree="ids agree on all $(wc -l < "$W/ours.jsonl") records"
else agree="IDS DIFFER (see $W/ours.jsonl vs $W/hf.jsonl)"; fi
python3 - "$bytes" $best $hf_s "$agree" <<'PY'
import sys
b, ours, ours_cpu, hf, hf_cpu, agree = int(sys.argv[1]), *map(float, sys.argv[2:6]), sys.argv[6]
print(f"corpus        {b / 1e6:.2f} MB of text")
print(f"fluxprm       {ours:.3f} s wall, {ours_cpu:.3f} s CPU  {b / 1e6 / ours:.2f} MB/s  (whole process: load, JSONL in/out)")
print(f"HF tokenizers {hf:.3f} s wall, {hf_cpu:.3f} s CPU  {b / 1e6 / hf:.2f} MB/s  (encode calls only, one thread)")
print(f"ratio         {hf / ours:.2f}x wall, {hf_cpu / ours_cpu:.2f}x CPU time  ({agree})")
PY
case "$agree" in IDS*) exit 1;; esac
