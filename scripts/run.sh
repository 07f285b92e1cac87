#!/bin/sh
# The main job in one command: install dependencies, build, score ProcessBench (GSM8K split, 400 solutions)
# with a PRM and print the ProcessBench report (first-error accuracy on erroneous/correct samples, F1).
#
#   sh scripts/run.sh [MODEL_DIR [extra `fluxprm score` options]]
#
# MODEL_DIR is a PRM checkpoint directory (e.g. ReasonFlux-PRM-7B or Qwen2.5-Math-PRM-7B: config.json,
# safetensors, tokenizer files) or a GGUF file.  Without one, a tiny random-weight PRM from the test
# fixtures is used on the real Qwen2 tokenizer — the pipeline runs end to end, the numbers mean nothing.
set -eu
cd "$(dirname "$0")/.."
SHARED=${FLUXPRM_SHARED:-../shared}
sh scripts/install-deps.sh
make -j2
out=build/main-job
mkdir -p "$out"
if [ $# -ge 1 ]; then
  model=$1; shift
else
  model=$out/demo-prm
  mkdir -p "$model"
  for f in config_prm.json:config.json model.safetensors.index.json trunk.safetensors prm_head.safetensors; do
    ln -sf "$PWD/tests/ref/score/${f%%:*}" "$model/${f##*:}"
  done
  ln -sf "$(cd "$SHARED/data/tokenizer/qwen2" && pwd)/tokenizer.json" "$model/tokenizer.json"
  # the PRM tokenizer calls id 151651 <extra_0>; the stock one does not, so name the id explicitly
  set -- --step-token-id 151651 "$@"
  echo "run.sh: no MODEL_DIR given: using the tiny random-weight demo PRM ($model)" >&2
fi
./build/fluxprm score --model "$model" "$@" -o "$out/processbench_gsm8k_scored.jsonl" "$SHARED/data/processbench/gsm8k.json"
./build/fluxprm eval --rewards-field step_rewards --report "$out/processbench_gsm8k_report.json" "$out/processbench_gsm8k_scored.jsonl"
cat "$out/processbench_gsm8k_report.json"
echo "run.sh: per-step rewards in $out/processbench_gsm8k_scored.jsonl" >&2
