#!/usr/bin/env bash
# build.sh [BUILD_DIR] [cmake options...] — install dependencies if needed, configure and
# build kiln. Prints the path of the kiln binary on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
"$root/scripts/deps.sh"
mkdir -p "$build"
log=$build/build.log
# the build's chatter goes to a log; it is shown only when something fails
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" &&
       cmake --build "$build" -j"$(nproc)"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "build failed (log: $log)" >&2
  exit 1
fi
echo "$build/kiln"
