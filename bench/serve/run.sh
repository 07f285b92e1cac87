#!/bin/sh
# Load benchmark for `fluxprm serve`: starts the server on a free loopback port, sends N POST /get_reward
# requests (B queries each) with C in flight from a libcurl-multi client (bench/serve/load.c), and prints
# throughput (req/s) and p50/p99 latency, then stops the server with SIGTERM.
# usage (from the repository root): sh bench/serve/run.sh [N=2000] [C=64] [B=2]
# env: BUILD (default build); MODEL (a PRM checkpoint dir; default: the tiny test fixture of
#      tests/ref/score + ../shared's Qwen2 tokenizer, assembled under tests/tmp); SERVE_ARGS (extra options).
set -e
N=${1:-2000}
C=${2:-64}
B=${3:-2}
BUILD=${BUILD:-build}
SHARED=${FLUXPRM_SHARED:-../shared}
W=tests/tmp/bench-serve
make -s BUILD="$BUILD" -j2 "$BUILD/fluxprm" >/dev/null
mkdir -p "$W"
cc -O2 -o "$W/load" bench/serve/load.c $(pkg-config --cflags --libs libcurl)
if [ -z "$MODEL" ]; then
  MODEL=$W/prm
  TOK=$SHARED/data/tokenizer/qwen2/tokenizer.json
  [ -f "$TOK" ] || { echo "needs $TOK (or set MODEL)" >&2; exit 2; }
  mkdir -p "$MODEL"
  R=$(pwd)/tests/ref/score
  ln -sf "$R/config_prm.json" "$MODEL/config.json"
  ln -sf "$R/model.safetensors.index.json" "$R/trunk.safetensors" "$R/prm_head.safetensors" "$MODEL/"
  ln -sf "$(cd "$(dirname "$TOK")" && pwd)/tokenizer.json" "$MODEL/tokenizer.json"
  python3 -c 'import json,sys; json.dump({"chat_template": open(sys.argv[1]).read()}, open(sys.argv[2], "w"))' \
    "$SHARED/data/templates/qwen2.5-instruct.jinja" "$MODEL/tokenizer_config.json"
  SERVE_ARGS="--step-token-id 151651 $SERVE_ARGS"
fi
"$BUILD/fluxprm" serve --model "$MODEL" --port 0 $SERVE_ARGS 2>"$W/serve.err" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
PORT=
i=0
while [ -z "$PORT" ] && [ $i -lt 600 ]; do
  PORT=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\)$/\1/p' "$W/serve.err")
  kill -0 $PID 2>/dev/null || { cat "$W/serve.err" >&2; exit 1; }
  [ -n "$PORT" ] || sleep 0.1
  i=$((i + 1))
done
[ -n "$PORT" ] || { echo "server did not start" >&2; exit 1; }
echo "fluxprm serve on port $PORT, model $MODEL"
"$W/load" "http://127.0.0.1:$PORT/get_reward" "$N" "$C" "$B"
kill -TERM $PID
wait $PID || true
trap - EXIT
tail -n 1 "$W/serve.err"
