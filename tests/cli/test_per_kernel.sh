#!/usr/bin/env bash
# test_per_kernel.sh KILN SRCDIR — `kiln bench --per-kernel` (runtime/profile.c, the
# profile marks codegen/entry.c emits, driver/kernels.c): one row per kernel that
# `kiln check` counts, each timed on every run, sorted slowest first, FLOPs adding up to
# the model's, shares adding up to 1, for the forward pass and the training step; the
# usage error with --interp; and no profile call in exported code.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
tiny=$src/tests/conformance/cases/024_gpt_tiny/model.json

kernels=$("$kiln" check "$tiny" --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["kernels"])')

check_json() { # check_json FILE KERNELS FORWARD(0/1)
    /usr/bin/python3 - "$@" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
n, forward = int(sys.argv[2]), sys.argv[3] == "1"
rows, kinds = o["per_kernel"], o["per_kind"]
assert len(rows) == n == o["kernels"], (len(rows), n, o["kernels"])
assert sorted(r["position"] for r in rows) == list(range(n)), "every kernel exactly once"
ms = [r["ms"] for r in rows]
assert ms == sorted(ms, reverse=True), "sorted slowest first"
assert all(r["ms"] > 0 for r in rows), "every kernel timed"
assert all(r["function"].startswith("k") and r["kind"] and r["ops"] and r["type"] for r in rows), rows[0]
share = sum(r["share"] for r in rows) + o["per_kernel_copies_ms"] / o["per_kernel_total_ms"]
assert abs(share - 1) < 1e-9, share
assert sum(k["kernels"] for k in kinds) == n
assert abs(sum(k["ms"] for k in kinds) - sum(ms)) < 1e-9
flops = sum(r["flops"] for r in rows)
# the forward pass computes exactly the kernels' nodes; a training step's count also has
# the nodes fusion folds away
if forward:
    assert flops == o["flops"], (flops, o["flops"])
else:
    assert 0 < flops <= o["flops"], (flops, o["flops"])
# the time inside the entry is the run (one call through libffi around it)
assert o["per_kernel_total_ms"] <= o["forward_ms_median" if forward else "step_ms_median"] * 1.5 + 0.5
PY
}

if "$kiln" bench "$tiny" --per-kernel --iters 3 --json >out.json 2>err.txt; then
    check_json out.json "$kernels" 1 || fail "bad forward --per-kernel --json: $(head -c 600 out.json)"
else
    fail "kiln bench --per-kernel --json: $(head -n 5 err.txt)"
fi

if "$kiln" bench "$tiny" --per-kernel --iters 2 --threads 2 >out.txt 2>err.txt; then
    grep -q "^per kernel ($kernels kernels), averaged over 2 runs" out.txt || fail "no per-kernel header: $(cat out.txt)"
    grep -q "^by kind" out.txt || fail "no by-kind table"
    rows=$(grep -cE '^ +[0-9]+ +[0-9.]+ +[0-9.]+% ' out.txt || true)
    [[ $rows -eq $kernels ]] || fail "$rows kernel rows, expected $kernels: $(cat out.txt)"
    grep -qE 'gemm.*\(k[0-9]+_gemm\)' out.txt || fail "no GEMM row with its function: $(cat out.txt)"
else
    fail "kiln bench --per-kernel: $(head -n 5 err.txt)"
fi

tkernels=$("$kiln" check "$tiny" --train -D B=1 --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["kernels"])')
if "$kiln" bench "$tiny" -D B=1 --train --per-kernel --iters 2 --json >out.json 2>err.txt; then
    check_json out.json "$tkernels" 0 || fail "bad --train --per-kernel --json: $(head -c 600 out.json)"
else
    fail "kiln bench --train --per-kernel: $(head -n 5 err.txt)"
fi

status=0
"$kiln" bench "$tiny" --per-kernel --interp >out.txt 2>err.txt || status=$?
[[ $status -eq 2 ]] && grep -q -- "--per-kernel" err.txt || fail "--per-kernel --interp: exit $status, $(cat err.txt)"

# exported code never calls the profiler
"$kiln" compile "$tiny" --emit llvm >fwd.ll 2>err.txt || fail "compile --emit llvm: $(head -n 5 err.txt)"
"$kiln" compile "$tiny" --train --emit llvm >train.ll 2>err.txt || fail "compile --train --emit llvm: $(head -n 5 err.txt)"
if grep -q kiln_profile fwd.ll train.ll; then fail "exported LLVM IR calls kiln_profile_mark"; fi

finish "test_per_kernel: ok ($kernels forward kernels, $tkernels training-step kernels)"
