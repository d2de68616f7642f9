#!/bin/bash
# smoke_check.sh PATTERN -- COMMAND [ARGS...]
# Runs a benchmark in its quick mode for ctest: passes when it exits 0 and its output
# contains PATTERN (the line with its ratios), is skipped (77) when it exits 77 (a
# baseline's package is missing: it says which), fails otherwise. Speed is not checked.
pattern=$1
shift
[ "$1" = "--" ] && shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
[ $rc -eq 77 ] && exit 77
if [ $rc -ne 0 ]; then
    echo "smoke_check: exit status $rc" >&2
    exit 1
fi
if ! grep -q -- "$pattern" <<<"$out"; then
    echo "smoke_check: output has no '$pattern'" >&2
    exit 1
fi
