#!/bin/sh
# Shared-prefix scoring cost (Best-of-N): prefix + N suffixes on a KV cache vs N full sequences.
# Usage (from the repository root): sh bench/prefix/run.sh [--model DIR] [--prefix P] [--suffix S] [--n N] [--threads T]
# Env: BUILD (default build).
set -eu
BUILD=${BUILD:-build}
BIN="$BUILD/bench/prefix/bench_prefix"
make -s BUILD="$BUILD" "$BIN" >/dev/null
"$BIN" "$@"
