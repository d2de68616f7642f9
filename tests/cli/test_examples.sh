#!/usr/bin/env bash
# test_examples.sh KILN SRCDIR [NAME...] — the worked examples' recipes (examples/*/run.sh)
# run end to end at a tiny scale (`--tiny`: a few steps on short windows), so that a
# change to kiln's command line, outputs or messages that breaks a recipe fails here
# instead of rotting in a README. Each recipe must exit 0 and write its results.md with
# the rows its README shows; the positions recipe must report learned positions past
# their table as refused with kiln's message (not crash); the icl recipe must print its
# accuracy table and a kiln generate answer. The figures are not checked (a few steps
# learn nothing). NAME... picks examples (default: all four). A recipe whose data is not
# installed (fortunes, fortunes-zh) is skipped.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
shift 2
names=${*:-char_gpt tang_poetry positions icl}

expect() { # expect FILE TEXT — FILE must contain TEXT (a fixed string)
    grep -qF -- "$2" "$1" || fail "$1 lacks '$2'"
}

for name in $names; do
    out=$work/$name
    start=$(date +%s)
    status=0
    KILN=$kiln THREADS=1 bash "$src/examples/$name/run.sh" --tiny --out "$out" >"$work/$name.log" 2>&1 || status=$?
    echo "$name: exit $status in $(($(date +%s) - start)) s"
    if [ $status = 77 ]; then
        echo "  skipped: $(tail -n 1 "$work/$name.log")"
        continue
    fi
    if [ $status != 0 ]; then
        fail "examples/$name/run.sh --tiny exited with $status"
        tail -n 30 "$work/$name.log"
        continue
    fi
    [ -s "$out/results.md" ] || { fail "$name wrote no results.md"; continue; }
    case $name in
    char_gpt)
        expect "$out/results.md" "bits per byte"
        expect "$out/results.md" "temperature 0.6"
        expect "$out/results.md" "temperature 1.0"
        [ -s "$out/loss.svg" ] || fail "char_gpt drew no loss.svg"
        ;;
    tang_poetry)
        expect "$out/results.md" "validation loss"
        expect "$out/results.md" "lines keeping the form"
        expect "$out/sample_five_1.txt" "明月照空山，"
        ;;
    positions)
        expect "$out/results.md" "| learned |"
        expect "$out/results.md" "refused"
        expect "$out/results.md" "is longer than max_len"
        expect "$out/results.md" "| alibi |"
        [ -s "$out/loss.svg" ] || fail "positions drew no loss.svg"
        ;;
    icl)
        expect "$out/results.md" "| shots k |"
        expect "$out/results.md" "| 8 |"
        expect "$out/results.md" "kiln generate"
        [ -s "$out/accuracy.svg" ] || fail "icl drew no accuracy.svg"
        ;;
    esac
done

finish "examples: all recipes ran"
