#!/usr/bin/env bash
# build.sh [BUILD_DIR] [cmake options...] — install dependencies if needed, configure and
# build kiln. Prints the path of the kiln binary on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
"$root/scripts/deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
echo "$build/kiln"
