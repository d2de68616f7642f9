#!/usr/bin/env bash
# test.sh — the whole test suite from a fresh clone: installs missing dependencies,
# builds kiln twice (plain, and with AddressSanitizer + UndefinedBehaviorSanitizer) and
# runs every test in both builds with ctest. Ends with ctest's summary of the plain build.
# The plain build also builds the libFuzzer targets (fuzz/, a clang-19 sub-build) and its
# ctest fuzzes each for KILN_FUZZ_SECONDS (6 here: the CI budget; tests fuzz.NAME, label `fuzz`),
# failing on any finding; the sanitizer build replays their corpus and regression inputs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc)
t0=$SECONDS
since() { echo "($((SECONDS - t0)) s since the start)"; } # where CI time goes (docs/testing.md)

# Compiler flags of the two builds (docs/testing.md, "What keeps CI inside its budget"):
# -g1 is line tables, all a backtrace, a sanitizer report or valgrind needs, at two
# thirds of -g's compile time; the sanitizer build is -O1 (ASan's recommended level),
# which compiles about 2.5 times faster than -O2 with instrumentation.
asan_flags="-O1 -g1 -DNDEBUG"
plain_flags="-O2 -g1 -DNDEBUG"

echo "== sanitizer build (ASan + UBSan)"
"$root/scripts/build.sh" "$root/build-asan" -DKILN_SANITIZE=ON -DCMAKE_C_FLAGS_RELWITHDEBINFO="$asan_flags" >/dev/null
echo "== sanitizer build done $(since)"
# The plain build runs meanwhile at the lowest priority: the sanitizer suite keeps the CPU
# whenever it wants it (the build barely slows its timeouts and watchdogs), and the build
# takes what the suite leaves idle (tests waiting on a timeout or a killed process, the
# last long tests on one core): 20–40 s of CI time (docs/testing.md).
plain_log=$(mktemp)
( nice -n 19 "$root/scripts/build.sh" "$root/build" -DCMAKE_C_FLAGS_RELWITHDEBINFO="$plain_flags" \
    -DKILN_FUZZ_SECONDS="${KILN_FUZZ_SECONDS:-6}" >"$plain_log" 2>&1 ) &
plain_build=$!
asan_status=0
# -LE asan_skip: the tests that cannot find a memory error that the others do not (the
# list and the reason for each: docs/testing.md)
# quarantine_size_mb=16 (ASan's default is 256): a freed block is kept from reuse for the
# next 16 MB of frees instead of 256, which still catches a use soon after a free, and makes
# every kiln process (LLVM allocates and frees heavily while compiling) about 1.7x faster.
(cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:quarantine_size_mb=16 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j"$jobs" -LE asan_skip 2>&1 | tail -n 25) || asan_status=$?

echo "== sanitizer suite done $(since)"
echo "== plain build (started with the sanitizer suite)"
if ! wait "$plain_build"; then
  cat "$plain_log" >&2
  exit 1
fi
rm -f "$plain_log"
echo "== plain build done $(since); the plain suite's own time is ctest's last line"
cd "$root/build"
status=0
ctest --output-on-failure -j"$jobs" || status=$?
if [ "$asan_status" -ne 0 ]; then
  echo "the sanitizer build's tests failed (see above)" >&2
  exit "$asan_status"
fi
exit "$status"
