#!/bin/sh
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) into build-fuzz/ and runs each for
# FUZZ_SECONDS (default 60) from the seed corpora in fuzz/corpus (copied to build-fuzz/corpus-<target>, which
# grows between runs).  Usage: sh fuzz/run.sh [target...]   (targets: gguf torchzip safetensors)
# Crashes are written to build-fuzz/crash-*; the script exits non-zero if any target fails.
set -eu
cd "$(dirname "$0")/.."
CLANG=${CLANG:-$(command -v clang || command -v clang-14 || true)}
[ -n "$CLANG" ] || { echo "fuzz: clang not found (apt-get install clang)"; exit 2; }
OUT=build-fuzz
SECS=${FUZZ_SECONDS:-60}
mkdir -p "$OUT"
DEPS="jansson libpcre2-8 libutf8proc libcurl libmicrohttpd"
CFLAGS="-g -O1 -std=c11 -D_GNU_SOURCE -fno-omit-frame-pointer -fsanitize=address,undefined -Iinclude -Isrc $(pkg-config --cflags $DEPS)"
LIBS="$(pkg-config --libs $DEPS) -lm -lpthread"
# the readers and what they use (not the whole library: no OpenMP, no ISA-specific kernels)
SRCS="src/base/error.c src/base/file.c src/tensor/dtype.c src/model/weights_store.c src/model/torchzip.c
      src/model/gguf.c src/model/safetensors.c"
for f in src/base/json.c; do [ -f "$f" ] && SRCS="$SRCS $f"; done
targets=${*:-gguf torchzip safetensors}
status=0
for t in $targets; do
  echo "== fuzz_$t: build"
  $CLANG $CFLAGS -fsanitize=fuzzer fuzz/fuzz_$t.c $SRCS -o "$OUT/fuzz_$t" $LIBS
  mkdir -p "$OUT/corpus-$t"
  cp -n fuzz/corpus/$t/* "$OUT/corpus-$t/" 2>/dev/null || true
  echo "== fuzz_$t: ${SECS}s"
  if ! "$OUT/fuzz_$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       -artifact_prefix="$OUT/crash-$t-" -print_final_stats=1 "$OUT/corpus-$t" 2>"$OUT/fuzz_$t.log"; then
    echo "fuzz_$t: FAILED (see $OUT/fuzz_$t.log and $OUT/crash-$t-*)"; tail -30 "$OUT/fuzz_$t.log"; status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$OUT/fuzz_$t.log" | tail -2
  fi
done
exit $status
