#!/bin/sh
# Runs each test binary given as an argument (from the repository root) and sums their RESULT lines.
passed=0; failed=0; skipped=0; crashed=""
for t in "$@"; do
  echo "== $t"
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out" | grep -v '^RESULT '
  res=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
  if [ -z "$res" ]; then
    echo "   $t exited with status $rc before reporting: counted as 1 failure"
    failed=$((failed + 1)); crashed="$crashed $t"; continue
  fi
  p=$(echo "$res" | cut -d' ' -f2); f=$(echo "$res" | cut -d' ' -f3); s=$(echo "$res" | cut -d' ' -f4)
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); crashed="$crashed $t"; fi
done
[ -n "$crashed" ] && echo "abnormal exits:$crashed"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
