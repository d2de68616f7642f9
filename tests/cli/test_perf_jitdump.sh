#!/usr/bin/env bash
# test_perf_jitdump.sh KILN SRCDIR — KILN_PERF=1 (codegen/jit.c): the JIT links through
# RuntimeDyld with LLVM's perf listener, which writes jit-PID.dump under $JITDUMPDIR
# naming the entry and the kernel functions (what `perf inject --jit` reads; running
# perf itself is docs/performance.md's manual step). Without KILN_PERF nothing is
# written, and the code computes the same either way.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
case=$src/tests/conformance/cases/024_gpt_tiny
tiny=$case/model.json
io=(--weights "$case/weights.safetensors" --inputs "$case/inputs.safetensors")

mkdir plain perf
JITDUMPDIR=$work/plain "$kiln" run "$tiny" "${io[@]}" --out plain.safetensors >/dev/null 2>err.txt ||
    fail "kiln run: $(head -n 5 err.txt)"
[[ -z $(find plain -name 'jit-*.dump') ]] || fail "a jit dump was written without KILN_PERF"

KILN_PERF=1 JITDUMPDIR=$work/perf "$kiln" run "$tiny" "${io[@]}" --out perf.safetensors >/dev/null 2>err.txt ||
    fail "KILN_PERF=1 kiln run: $(head -n 5 err.txt)"
dump=$(find perf -name "jit-*.dump" | head -n 1)
if [[ -z $dump ]]; then
    fail "KILN_PERF=1 wrote no jit-PID.dump under JITDUMPDIR"
else
    grep -qa 'gpt_tiny_forward' "$dump" || fail "the dump does not name the entry"
    grep -qaE 'k[0-9]+_(gemm|attention|layernorm|loop)' "$dump" || fail "the dump names no kernel"
    grep -qa 'kiln_gemm_tile' "$dump" || fail "the dump names no GEMM micro-kernel"
fi
cmp -s plain.safetensors perf.safetensors || fail "the output differs when linked for perf"

finish "test_perf_jitdump: ok ($(basename "${dump:-none}"))"
