# lib.sh — the start every tests/cli/test_*.sh shares. A script begins
#     set -euo pipefail
#     . "$(dirname "$0")/lib.sh" "$@"
# and then has: kiln (its first argument, the kiln binary) and src (its second, the source
# directory), both made absolute; py, the system python3 (the one with numpy); a scratch
# directory $work, removed when the script exits, as the current directory; and the
# helpers below. A check that fails calls `fail` and the script goes on, so that one run
# reports every failure; the script ends with `finish`.
kiln=$1
[[ $kiln == /* || $kiln != */* ]] || kiln=$PWD/$kiln # a path relative to where we started
src=${2:-}
[[ -z $src || $src == /* ]] || src=$PWD/$src
py=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

failures=0
fail() { # fail MESSAGE — one failed check
    echo "FAIL: $*"
    failures=$((failures + 1))
}
finish() { # finish [OK-MESSAGE] — exit 1 naming the failures, if any; else print OK-MESSAGE (default "NAME: ok") and exit 0
    local name
    name=$(basename "$0" .sh)
    if [[ $failures -gt 0 ]]; then
        echo "$name: $failures failure(s)"
        exit 1
    fi
    echo "${1:-$name: ok}"
    exit 0
}
run() { # run DESCRIPTION CMD... — CMD must exit 0; its stdout goes to out.txt, its stderr to err.txt
    local what=$1 status=0
    shift
    "$@" >out.txt 2>err.txt || status=$?
    if [[ $status -ne 0 ]]; then
        fail "$what: exit $status — $(head -n 8 err.txt)"
        return 1
    fi
}
kiln_ok() { # kiln_ok DESCRIPTION ARGS... — `kiln ARGS` must exit 0 (stdout in out.txt)
    local what=$1
    shift
    run "$what" "$kiln" "$@"
}
kiln_fails() { # kiln_fails DESCRIPTION STATUS PATTERN ARGS... — `kiln ARGS` must exit STATUS with PATTERN (grep) on stderr
    local what=$1 want=$2 pattern=$3 status=0
    shift 3
    "$kiln" "$@" >out.txt 2>err.txt || status=$?
    if [[ $status -ne $want ]]; then
        fail "$what: exit $status, expected $want — $(head -n 5 err.txt)"
    elif ! grep -q -- "$pattern" err.txt; then
        fail "$what: stderr lacks '$pattern': $(head -n 5 err.txt)"
    fi
}
