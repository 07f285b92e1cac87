#!/bin/sh
# Model prefill benchmark: fluxprm bench vs Debian's llama-bench and PyTorch (HF Qwen2Model, bf16) on the same
# random-weight Qwen2.5-0.5B / 1.5B-shaped checkpoints, in one run, interleaved (round r runs every peer once),
# then a table of medians and ratios fluxprm/peer (bench/model/report.py).  From the repository root:
#   sh bench/model/run.sh                 full: 0.5b and 1.5b, T=512,2048, R=3 rounds
#   QUICK=1 sh bench/model/run.sh         0.5b, T=512, R=1
#   LONG=1 sh bench/model/run.sh          also fluxprm and PyTorch at T=8192,16384 on 0.5b (LONG_REPEAT runs)
# Env: BUILD (default build-bench; models go to $BUILD/models, results to $BUILD/bench-model), FLUXPRM (a
#      fluxprm binary to run instead of building $BUILD/fluxprm), THREADS (2),
#      R, SHAPES ("0.5b 1.5b"), TOKENS ("512,2048"), PEERS ("llama torch"), PYREF,
#      REPEAT (3: timed runs per round of fluxprm fast and of PyTorch, whose median is the round's figure;
#      fluxprm exact and llama-bench run once a round), LONG_REPEAT (2: the same at LONG_TOKENS),
#      ISA (native: every peer picks its best kernels for this CPU; noamx: below).
# ISA=noamx measures the issue's machine class (AVX-512 BF16 / VNNI without AMX: its reference figures are
# from a Zen 4) on a CPU that has AMX (on a Zen 4 itself, run ISA=native), by turning AMX off for every peer alike: fluxprm FLUXPRM_AMX=0,
# PyTorch ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 (oneDNN's kernels for that ISA), llama.cpp Debian's Zen 4
# build of its CPU backend (libggml-cpu-zen4.so, made the only variant in pyref's private mount namespace of
# that call; the AMX variant otherwise loads, and its AMX-INT8 kernels run Q8_0).  Slow: PyTorch runs ~10x
# slower without AMX (0.5B T=2048 ~40 s a run), so use REPEAT=1 there.
# PyTorch's single runs at T=512 spread 438-958 tok/s within one process on this machine (2026-11-26), so a
# round's figure is the median of REPEAT runs in one process rather than one run.
# Without pyref (no torch, no llama-bench, no way to make the models) the benchmark is skipped, visibly.
set -eu
BUILD=${BUILD:-build-bench}
PYREF=${PYREF:-/work/shared/tools/pyref}
SHARED=${FLUXPRM_SHARED:-../shared}
THREADS=${THREADS:-2}
if [ "${QUICK:-0}" = 1 ]; then R=${R:-1}; SHAPES=${SHAPES:-0.5b}; TOKENS=${TOKENS:-512}
else R=${R:-3}; SHAPES=${SHAPES:-"0.5b 1.5b"}; TOKENS=${TOKENS:-512,2048}; fi
PEERS=${PEERS:-"llama torch"}
ISA=${ISA:-native}
case "$ISA" in
  native) ;;
  noamx) export FLUXPRM_AMX=0 ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 ;;
  *) echo "bench/model: ISA must be native or noamx (got '$ISA')" >&2; exit 2 ;;
esac
REPEAT=${REPEAT:-3}
LONG_REPEAT=${LONG_REPEAT:-2}
if [ ! -x "$PYREF" ]; then
  echo "bench/model: SKIPPED (no pyref at $PYREF: it makes the models and runs llama-bench and PyTorch)"
  exit 0
fi
if [ -n "${FLUXPRM:-}" ]; then FP=$FLUXPRM  # a given binary (e.g. built from another checkout)
else make -s BUILD="$BUILD" -j2 "$BUILD/fluxprm" >/dev/null; FP=$BUILD/fluxprm; fi
M=$BUILD/models
OUT=$BUILD/bench-model/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$M" "$OUT"
RES=$OUT/results.jsonl
echo "bench/model: results in $RES (ISA=$ISA)"
# the models (random weights, seeded; tokenizer files only so that llama.cpp accepts the GGUF)
for s in $SHAPES; do
  d=$M/qwen2-$s
  [ -f "$d/model.safetensors" ] || "$PYREF" run bench/model/make_models.py "$M" "$s"
  if [ -f "$SHARED/data/tokenizer/qwen2/tokenizer.json" ]; then
    cp "$SHARED/data/tokenizer/qwen2/tokenizer.json" "$SHARED/data/tokenizer/qwen2/tokenizer_config.json" "$d/"
  fi
  for ty in bf16 q8_0; do
    [ -f "$d-$ty.gguf" ] || "$FP" convert --trunk-only --type "$ty" "$d" "$d-$ty.gguf"
  done
done
note() { # machine state next to each measurement
  printf '{"peer": "load", "round": %s, "what": "%s", "loadavg": "%s", "time": "%s", "isa": "%s"}\n' "$1" "$2" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$(date -u +%H:%M:%S)" "$ISA" >> "$RES"
}
tag() { # prefixes a JSON object line with run metadata
  python3 -c 'import json,sys
extra = json.loads(sys.argv[1])
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line); d.update(extra); print(json.dumps(d))' "$1"
}
fp_run() { # round shape mode file-suffix repeat [fluxprm bench options...]
  r=$1 s=$2 mode=$3 ty=$4 rep=$5; shift 5
  note "$r" "fluxprm $s $ty $mode"
  "$FP" bench "$@" --model "$M/qwen2-$s-$ty.gguf" --tokens "$TOKENS" --threads "$THREADS" --repeat "$rep" \
      --warmup 1 --no-profile --json | tag "{\"peer\": \"fluxprm\", \"mode\": \"$mode\", \"shape\": \"$s\", \"type\": \"$ty\", \"round\": $r}" >> "$RES"
}
GGML_VARIANTS=/usr/lib/x86_64-linux-gnu/ggml/backends0 # in pyref's chroot
llama_run() { # round shape type
  note "$1" "llama-bench $2 $3"
  lb="llama-bench -m '$M/qwen2-$2-$3.gguf' -p '$TOKENS' -n 0 -t '$THREADS' -r 1 -o json"
  if [ "$ISA" = noamx ]; then # the Zen 4 variant alone in the variants directory (a private mount; see above)
    mkdir -p "$BUILD/ggml-zen4"
    lb="cp $GGML_VARIANTS/libggml-cpu-zen4.so '$BUILD/ggml-zen4/' && mount --bind '$BUILD/ggml-zen4' $GGML_VARIANTS && $lb"
  fi
  if ! "$PYREF" exec sh -c "$lb" >"$OUT/llama.json" 2>"$OUT/llama.err"; then
    echo "bench/model: llama-bench failed on $2 $3 (see $OUT/llama.err): no llama.cpp figure in round $1" >&2
    return 0
  fi
  # the CPU backend variant it loaded (llama-bench's log line "load_backend: loaded CPU backend from ...")
  variant=$(sed -n 's/.*loaded CPU backend from .*libggml-cpu-\(.*\)\.so.*/\1/p' "$OUT/llama.err" | head -n 1)
  if [ "$ISA" = noamx ] && [ "$variant" != zen4 ]; then
    echo "bench/model: llama-bench did not run the Zen 4 variant (got '${variant:-none}'; see $OUT/llama.err)" >&2
    exit 1
  fi
  python3 -c 'import json,sys
for t in json.load(open(sys.argv[1])):
    print(json.dumps({"T": t["n_prompt"], "tok_s": t["avg_ts"], "build": t.get("build_commit", "?"),
                      "cpu": t.get("cpu_info", "?"), "backends": t.get("backends", "?"), "variant": sys.argv[2]}))' \
    "$OUT/llama.json" "${variant:-?}" |
    tag "{\"peer\": \"llama\", \"mode\": \"llama.cpp (Debian)\", \"shape\": \"$2\", \"type\": \"$3\", \"round\": $1}" >> "$RES"
}
torch_run() { # round shape
  note "$1" "torch $2"
  "$PYREF" run bench/model/torch_prefill.py "$M/qwen2-$2" "$THREADS" "$REPEAT" $(echo "$TOKENS" | tr , ' ') 2>/dev/null |
    tag "{\"peer\": \"torch\", \"mode\": \"torch bf16\", \"shape\": \"$2\", \"type\": \"bf16\", \"round\": $1}" >> "$RES"
}
r=1
while [ "$r" -le "$R" ]; do
  for s in $SHAPES; do
    echo "bench/model: round $r/$R, $s (load $(cut -d' ' -f1-3 /proc/loadavg))"
    fp_run "$r" "$s" fast bf16 "$REPEAT" --precision fast
    case " $PEERS " in *" llama "*) llama_run "$r" "$s" bf16;; esac
    fp_run "$r" "$s" exact bf16 1 --precision exact
    case " $PEERS " in *" torch "*) torch_run "$r" "$s";; esac
    fp_run "$r" "$s" fast q8_0 "$REPEAT" --precision fast
    case " $PEERS " in *" llama "*) llama_run "$r" "$s" q8_0;; esac
  done
  r=$((r + 1))
done
# one profiled run (per-phase replay) of the first shape, bf16, default dispatch
s1=$(echo $SHAPES | cut -d' ' -f1)
note 0 "fluxprm profile $s1"
"$FP" bench --precision fast --model "$M/qwen2-$s1-bf16.gguf" --tokens "$TOKENS" --threads "$THREADS" --repeat 1 | tee "$OUT/profile-$s1.txt"
if [ "${LONG:-0}" = 1 ]; then
  note 0 "fluxprm long 0.5b"
  "$FP" bench --precision fast --model "$M/qwen2-0.5b-bf16.gguf" --tokens "${LONG_TOKENS:-8192,16384}" --threads "$THREADS" \
    --repeat "$LONG_REPEAT" --no-profile --json | tag '{"peer": "fluxprm-long", "mode": "fast", "shape": "0.5b", "type": "bf16", "round": 0}' >> "$RES"
  case " $PEERS " in *" torch "*)
    note 0 "torch long 0.5b"
    "$PYREF" run bench/model/torch_prefill.py "$M/qwen2-0.5b" "$THREADS" "$LONG_REPEAT" $(echo "${LONG_TOKENS:-8192,16384}" | tr , ' ') 2>/dev/null |
      tag '{"peer": "torch-long", "mode": "torch bf16", "shape": "0.5b", "type": "bf16", "round": 0}' >> "$RES";;
  esac
fi
note 0 end
python3 bench/model/report.py "$RES" "$M" | tee "$OUT/table.txt"
