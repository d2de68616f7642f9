#!/usr/bin/env bash
# check_one.sh KILN path/to/KIND/NAME.expect — runs one hostile case (see README.md) and
# checks that kiln failed cleanly: the expected exit status (1 unless the .expect says
# otherwise), no signal, no timeout, no internal error or sanitizer report, every
# expected line in stderr, the pre-existing --out file unchanged and no file left behind.
set -uo pipefail

kiln=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
expect=$2
case_dir=$(cd "$(dirname "$expect")" && pwd)
kind=$(basename "$case_dir")
name=$(basename "$expect" .expect)
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3
limit=20 # seconds; every hostile input must be refused fast

tmp=$(mktemp -d)   # the case's files, and where kiln runs
meta=$(mktemp -d)  # this script's own files (stdout, stderr, listings)
trap 'rm -rf "$tmp" "$meta"' EXIT

fail() {
    echo "FAIL hostile.$kind.$name: $*"
    if [[ -n ${cmd_text:-} ]]; then echo "--- command: $cmd_text"; fi
    if [[ -f $meta/stderr ]]; then
        echo "--- stderr (first 40 lines):"
        head -c 8000 "$meta/stderr" | head -n 40
    fi
    exit 1
}

# ---- the expectation: "exit: N" sets the status, "max-bytes: N" bounds the size of
# stderr, "# ..." is a comment, blank lines are skipped, every other line must appear in
# stderr as a substring (@TMP@ stands for the case's temporary directory)
want_status=1
max_bytes=
patterns=()
while IFS= read -r line || [[ -n $line ]]; do
    [[ -z $line || $line == "# "* ]] && continue
    if [[ $line =~ ^exit:\ *([0-9]+)$ ]]; then
        want_status=${BASH_REMATCH[1]}
        continue
    fi
    if [[ $line =~ ^max-bytes:\ *([0-9]+)$ ]]; then
        max_bytes=${BASH_REMATCH[1]}
        continue
    fi
    patterns+=("$line")
done <"$expect"
[[ ${#patterns[@]} -gt 0 ]] || fail "$expect names no expected message"

# ---- the files: the good base files, plus whatever this case generates
"$python" "$here/make_bad.py" "$kind" "$name" "$tmp" || fail "make_bad.py could not generate the case"
model=$here/base/model.json
weights=$tmp/w.safetensors
inputs=$tmp/x.safetensors
out=$tmp/out.safetensors
printf 'a good file that no failure may overwrite\n' >"$out"
cp "$out" "$meta/out.orig"

args=()
case $kind in
model)
    if [[ -f $case_dir/$name.json ]]; then model_file=$case_dir/$name.json
    else model_file=$tmp/$name.json; fi
    args=(check "$model_file")
    ;;
weights)
    args=(run "$model" --weights "$tmp/$name.safetensors" --inputs "$inputs" --out "$out" --interp)
    ;;
inputs)
    args=(run "$model" --weights "$weights" --inputs "$tmp/$name.safetensors" --out "$out" --interp)
    ;;
cli)
    # one argument per line (blank lines skipped, @EMPTY@ is an empty argument);
    # @MODEL@ @W@ @X@ @OUT@ @TMP@ and @GEN:KIND:CASE@ are replaced
    [[ -f $case_dir/$name.args ]] || fail "missing $case_dir/$name.args"
    while IFS= read -r a || [[ -n $a ]]; do
        [[ -z $a ]] && continue
        [[ $a == @EMPTY@ ]] && a=
        # @GEN:KIND:CASE@ — the bad file of another kind's case, generated here
        while [[ $a =~ @GEN:([a-z]+):([A-Za-z0-9_]+)@ ]]; do
            "$python" "$here/make_bad.py" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "$tmp" ||
                fail "make_bad.py could not generate ${BASH_REMATCH[1]} case ${BASH_REMATCH[2]}"
            a=${a//"${BASH_REMATCH[0]}"/$tmp/${BASH_REMATCH[2]}.safetensors}
        done
        a=${a//@MODEL@/$model}
        a=${a//@W@/$weights}
        a=${a//@X@/$inputs}
        a=${a//@OUT@/$out}
        a=${a//@TMP@/$tmp}
        args+=("$a")
    done <"$case_dir/$name.args"
    ;;
*) fail "unknown kind '$kind' (expected model, weights, inputs or cli)" ;;
esac
cmd_text="kiln ${args[*]}"
cmd_text=${cmd_text:0:400}

(cd "$tmp" && ls -A) | sort >"$meta/files.before"

# ---- run
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
start=$EPOCHREALTIME
(cd "$tmp" && timeout --kill-after=5 "$limit" "$kiln" "${args[@]}" >"$meta/stdout" 2>"$meta/stderr" </dev/null)
status=$?
elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')

# ---- checks
if [[ $status -eq 124 || $status -eq 137 ]]; then fail "timed out after ${limit}s (a hostile input must be refused fast)"; fi
if [[ $status -gt 128 ]]; then fail "killed by signal $((status - 128)) (exit status $status)"; fi
[[ $status -eq $want_status ]] || fail "exit status $status, expected $want_status"
if grep -q 'internal error' "$meta/stderr"; then fail "an internal error was reported"; fi
if grep -q 'AddressSanitizer\|LeakSanitizer\|runtime error:' "$meta/stderr"; then fail "sanitizer report"; fi
for p in "${patterns[@]}"; do
    p=${p//@TMP@/$tmp}
    grep -qF -- "$p" "$meta/stderr" || fail "stderr lacks: $p"
done
if [[ -n $max_bytes ]]; then
    size=$(wc -c <"$meta/stderr")
    [[ $size -le $max_bytes ]] || fail "stderr is $size bytes, over the $max_bytes allowed (messages must stay readable)"
fi
cmp -s "$out" "$meta/out.orig" || fail "the existing --out file was changed"
(cd "$tmp" && ls -A) | sort >"$meta/files.after"
if ! cmp -s "$meta/files.before" "$meta/files.after"; then
    fail "files were created or removed beside the inputs: $(comm -3 "$meta/files.before" "$meta/files.after" | tr -d '\t' | tr '\n' ' ')"
fi
echo "ok hostile.$kind.$name (exit $status, ${elapsed}s)"
