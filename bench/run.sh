#!/bin/sh
# `make bench`: the benchmarks in sequence, each against its peers measured in the same run:
#   1. bench/tokenizer/run.sh      fluxprm tokenize vs HF tokenizers (needs pyref and the shared Qwen2 tokenizer)
#   2. bench/gemm/run.sh --quick   fp_matmul_forward kernels vs the scalar reference and PyTorch
#   3. bench/attention/run.sh --quick  fp_attention_forward_ex (exact f32, fast AMX) vs PyTorch sdpa
#   4. bench/model/run.sh QUICK=1  trunk prefill vs llama-bench and PyTorch (0.5B shape, T=512, one round)
# A benchmark whose reference stack is missing is skipped with a line that says so; a failing one is reported
# and the others still run (exit status 1 at the end).  Env: BUILD (default build), PYREF.
set -u
BUILD=${BUILD:-build}
PYREF=${PYREF:-/work/shared/tools/pyref}
export BUILD PYREF
status=0
have_pyref=0
[ -x "$PYREF" ] && have_pyref=1
section() { echo; echo "==== $1"; }

section "tokenizer (bench/tokenizer/run.sh)"
if [ "$have_pyref" = 1 ]; then sh bench/tokenizer/run.sh || { echo "bench: tokenizer benchmark FAILED"; status=1; }
else echo "bench: tokenizer SKIPPED (no pyref at $PYREF for HF tokenizers)"; fi

section "GEMM kernels (bench/gemm/run.sh --quick)"
[ "$have_pyref" = 1 ] || echo "bench: gemm: no pyref at $PYREF: the torch columns are SKIPPED"
sh bench/gemm/run.sh --quick || { echo "bench: gemm benchmark FAILED"; status=1; }

section "attention (bench/attention/run.sh --quick)"
[ "$have_pyref" = 1 ] || echo "bench: attention: no pyref at $PYREF: the torch lines are SKIPPED"
REPS=3 sh bench/attention/run.sh --quick || { echo "bench: attention benchmark FAILED"; status=1; }

section "model prefill (QUICK=1 bench/model/run.sh)"
if [ "$have_pyref" = 1 ]; then QUICK=1 sh bench/model/run.sh || { echo "bench: model benchmark FAILED"; status=1; }
else echo "bench: model prefill SKIPPED (no pyref at $PYREF: it makes the models and runs llama-bench and PyTorch)"; fi
exit $status
