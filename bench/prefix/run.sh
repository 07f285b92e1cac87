#!/bin/sh
# Shared-prefix scoring cost (Best-of-N): prefix + N suffixes on a KV cache vs N full sequences.
# Usage (from the repository root): sh bench/prefix/run.sh [--model DIR] [--prefix P] [--suffix S] [--n N] [--threads T]
# Env: BUILD (default build).
set -eu
BUILD=${BUILD:-build}
make -s BUILD="$BUILD" "$BUILD/libfluxprm.a" >/dev/null
CC=${CC:-gcc}
mkdir -p "$BUILD/bench"
$CC -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -fopenmp -Iinclude -Isrc bench/prefix/bench_prefix.c \
    "$BUILD/libfluxprm.a" $(pkg-config --libs jansson libpcre2-8 libutf8proc libcurl libmicrohttpd) -lm -fopenmp \
    -o "$BUILD/bench/bench_prefix"
"$BUILD/bench/bench_prefix" "$@"
