#!/usr/bin/env bash
# test_bench_cmd.sh KILN SRCDIR — `kiln bench` runs and reports (a smoke test on a tiny
# model; the benchmark itself, bench/forward_bench.py, is not part of ctest): text and
# --json output with compile stages and forward times for compiled code and --interp,
# and its usage errors.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
tiny=$src/tests/conformance/cases/024_gpt_tiny/model.json

if "$kiln" bench "$tiny" --iters 2 >out.txt 2>err.txt; then
    grep -q '^compile: .* ms from model file to entry point' out.txt || fail "no compile line: $(cat out.txt)"
    grep -q '^forward (compiled): median .* over 2 runs' out.txt || fail "no forward line: $(cat out.txt)"
else
    fail "kiln bench: $(head -n 5 err.txt)"
fi
if "$kiln" bench "$tiny" -D B=1 --iters 1 --interp --json >out.json 2>err.txt; then
    /usr/bin/python3 -c "
import json, sys
o = json.load(open('out.json'))
assert o['mode'] == 'interp' and o['runs'] == 1 and o['forward_ms_median'] > 0 and o['flops'] > 0, o
" || fail "bad --json: $(cat out.json)"
else
    fail "kiln bench --interp --json: $(head -n 5 err.txt)"
fi
status=0
"$kiln" bench "$tiny" --iters 5000 >out.txt 2>err.txt || status=$?
[[ $status -eq 2 ]] && grep -q -- "--iters" err.txt || fail "--iters 5000: exit $status, $(cat err.txt)"
if "$kiln" bench "$tiny" -D B=1 --train --iters 2 --json >out.json 2>err.txt; then
    /usr/bin/python3 -c "
import json
o = json.load(open('out.json'))
assert o['mode'] == 'compiled' and o['runs'] == 2 and o['step_ms_median'] > 0, o
assert o['optim_bytes'] > 0 and o['flops'] > 0, o
" || fail "bad --train --json: $(cat out.json)"
else
    fail "kiln bench --train: $(head -n 5 err.txt)"
fi
status=0
"$kiln" bench "$tiny" --train --interp >out.txt 2>err.txt || status=$?
[[ $status -eq 2 ]] && grep -q -- "--interp" err.txt || fail "--train --interp: exit $status, $(cat err.txt)"

finish
