#!/usr/bin/env bash
# test_emit_dot.sh KILN SRCDIR — `kiln compile --emit dot` (driver/dot.c): one box per
# kernel `kiln check` counts, every edge between drawn nodes, the inputs and outputs as
# ovals; --dot-detail nodes puts each kernel's nodes in one cluster; the flag's usage
# errors. Rendering the char_gpt training step is test_dot_render.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
tiny=$src/tests/conformance/cases/024_gpt_tiny/model.json

count() { # count MODEL [flags…] — the kernels `kiln check` reports
    "$kiln" check "$@" --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["kernels"])'
}
# check_dot FILE KERNELS MODE — node ids are unique, every edge joins two drawn nodes,
# and the kernel boxes (kernels) or clusters (nodes) number KERNELS
check_dot() {
    /usr/bin/python3 - "$@" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
n, mode = int(sys.argv[2]), sys.argv[3]
assert text.startswith("digraph ") and text.rstrip().endswith("}"), "not one digraph"
nodes = re.findall(r'^\s*(\w+) \[', text, re.M)
assert len(nodes) == len(set(nodes)), "a node drawn twice"
edges = re.findall(r'^\s*(\w+) -> (\w+);', text, re.M)
missing = {e for edge in edges for e in edge if e not in set(nodes)}
assert not missing, f"edges to undrawn nodes: {sorted(missing)[:5]}"
assert len(edges) == len(set(edges)), "an edge drawn twice"
boxes = [x for x in nodes if re.fullmatch(r"k\d+", x)]
clusters = re.findall(r"subgraph cluster_k(\d+) ", text)
if mode == "kernels":
    assert len(boxes) == n and not clusters, (len(boxes), n)
    # no kernel stands alone: each reads or writes something drawn, or updates a parameter
    ends = {x for edge in edges for x in edge}
    updating = set(re.findall(r'^\s*(k\d+) \[.*\\nupdates \d+', text, re.M))
    assert all(f"k{k}" in ends | updating for k in range(n)), "a kernel with no edge"
else:
    assert len(clusters) == n and not boxes, (len(clusters), n)
assert any(x.startswith("out") for x in nodes), "no output drawn"
PY
}

n=$(count "$tiny")
"$kiln" compile "$tiny" --emit dot >fwd.dot 2>err.txt || fail "--emit dot: $(head -n 5 err.txt)"
check_dot fwd.dot "$n" kernels || fail "forward --emit dot"
grep -q 'gemm+add' fwd.dot || fail "no GEMM kernel with its epilogue in the picture"
grep -q 'tokens' fwd.dot || fail "the input is not drawn"
"$kiln" compile "$tiny" --emit dot --dot-detail nodes -o nodes.dot 2>err.txt || fail "--dot-detail nodes: $(head -n 5 err.txt)"
check_dot nodes.dot "$n" nodes || fail "forward --dot-detail nodes"
"$kiln" compile "$tiny" --emit dot --dot-detail kernels -o k.dot 2>err.txt || fail "--dot-detail kernels: $(head -n 5 err.txt)"
cmp -s k.dot fwd.dot || fail "--dot-detail kernels is not the default"

tn=$(count "$tiny" --train)
"$kiln" compile "$tiny" --train --emit dot >train.dot 2>err.txt || fail "--train --emit dot: $(head -n 5 err.txt)"
check_dot train.dot "$tn" kernels || fail "--train --emit dot"
grep -q 'attention_grad' train.dot || fail "no attention_grad kernel in the training step"
"$kiln" compile "$tiny" --train --emit dot --dot-detail nodes >train_nodes.dot 2>err.txt || fail "--train nodes: $(head -n 5 err.txt)"
check_dot train_nodes.dot "$tn" nodes || fail "--train --dot-detail nodes"

usage() { # usage WHAT ARGS… — exits 2 naming --dot-detail
    local what=$1 status=0
    shift
    "$kiln" compile "$tiny" "$@" >out.txt 2>err.txt || status=$?
    [[ $status -eq 2 ]] && grep -q -- "--dot-detail" err.txt || fail "$what: exit $status, $(cat err.txt)"
}
usage "bad --dot-detail" --emit dot --dot-detail edges
usage "--dot-detail with --emit ir" --emit ir --dot-detail nodes
usage "--dot-detail without --emit" -o x.so --dot-detail nodes

finish "test_emit_dot: ok ($n forward kernels, $tn training-step kernels)"
