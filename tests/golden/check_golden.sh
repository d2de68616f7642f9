#!/usr/bin/env bash
# check_golden.sh KILN GOLDEN.kir — compares `kiln check ARGS --dump-ir` (ARGS from the
# .args file beside the golden, paths relative to the repository root) with the golden
# text. KILN_UPDATE_GOLDEN=1 rewrites the golden instead (review the diff before
# committing it).
set -euo pipefail
kiln=$1
golden=$2
root=$(cd "$(dirname "$0")/../.." && pwd)
args=$(cat "${golden%.kir}.args")
cd "$root"
# shellcheck disable=SC2086
actual=$("$kiln" check $args --dump-ir)
if [ "${KILN_UPDATE_GOLDEN:-0}" = 1 ]; then
  printf '%s\n' "$actual" > "$golden"
  echo "updated $golden"
  exit 0
fi
if ! diff -u "$golden" <(printf '%s\n' "$actual"); then
  echo "golden mismatch: $golden (KILN_UPDATE_GOLDEN=1 to accept)" >&2
  exit 1
fi
