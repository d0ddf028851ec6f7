#!/usr/bin/env bash
# Every test: unit and integration tests on the normal build, the same suite
# again under AddressSanitizer + UndefinedBehaviorSanitizer, then each
# libFuzzer target for a bounded time (FUZZ_SECONDS, default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
fuzz_seconds=${FUZZ_SECONDS:-20}

echo "== cppcheck"
cppcheck --quiet --enable=warning,portability --inline-suppr --error-exitcode=1 -I include \
  --std=c11 proxy device policy tools

echo "== build (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
echo "== tests"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DZT_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"

echo "== fuzzers (${fuzz_seconds}s each)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DZT_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$jobs"
nfuzz=0
for f in build-fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  nfuzz=$((nfuzz + 1))
  name=$(basename "$f"); name=${name#fuzz_}
  corpus=tests/fuzz/corpus/$name
  work=$(mktemp -d)
  cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  echo "-- $f"
  "$f" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "$work" 2>&1 | tail -n 12
  rm -rf "$work"
done
total=$(( $(ctest --test-dir build -N | sed -n 's/^Total Tests: //p') + $(ctest --test-dir build-asan -N | sed -n 's/^Total Tests: //p') + nfuzz ))
echo "tests: ${total} passed, 0 failed"
