#!/usr/bin/env bash
# test_kernel_counts.sh KILN SRCDIR — structural tests of fusion (passes/fuse.c): how many
# kernels `kiln check --json` reports for small models and for char_gpt. The numbers are
# the issue's targets where they are met and today's counts where they are not (each
# marked): a change that fuses less fails here; one that fuses more must lower them.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

kernels() { # kernels MODEL [check flags…] — the kernel count check reports
    "$kiln" check "$@" --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["kernels"])'
}
expect_at_most() { # expect_at_most WHAT LIMIT COUNT
    if ! [[ $3 =~ ^[0-9]+$ ]]; then fail "$1: no kernel count"; return; fi
    if [[ $3 -gt $2 ]]; then fail "$1: $3 kernels, expected at most $2"; else echo "ok: $1: $3 kernels (limit $2)"; fi
}

model() { # model NAME LAYERS-JSON — a model over x (B, T, D=64)
    cat >"$1.json" <<JSON
{"format": "kiln/1", "name": "$1", "dims": {"B": 2, "T": 16},
 "inputs": {"x": {"shape": ["B", "T", 64], "dtype": "f32"}},
 "layers": $2, "outputs": ["out"]}
JSON
}

# a layernorm forward is one kernel
model ln '[{"name": "out", "op": "layernorm", "in": "x"}]'
expect_at_most "layernorm forward" 1 "$(kernels ln.json)"

# linear + bias + gelu is one kernel: the GEMM applies bias and gelu as it stores C
model lin '[{"name": "h", "op": "linear", "out": 128, "in": "x"}, {"name": "out", "op": "gelu", "in": "h"}]'
expect_at_most "linear+bias+gelu" 1 "$(kernels lin.json)"

# an attention forward is one kernel: the head split and merge around it are folded in
# (its projections on top: the q, k, v matmuls as one kernel of sibling GEMMs, and o)
model att '[{"name": "out", "op": "attention", "in": "x", "heads": 4, "causal": true, "bias": false}]'
n=$(kernels att.json)
expect_at_most "attention module, no bias (q/k/v GEMMs, attention, o GEMM)" 3 "$n"
"$kiln" check att.json --dump-after fuse >att.txt
grep -q "^kernel .* attention:" att.txt || fail "no attention kernel in the schedule"
for id in $(grep -E "^%[0-9]+ = transpose" att.txt | sed 's/ = .*//'); do
    grep -Eq "^kernel [0-9]+ node: $id\*?$" att.txt && fail "transpose $id runs as a kernel of its own"
done
grep -Eq "^%[0-9]+ = transpose" att.txt || fail "the attention model has no transposes to fold (test is stale)"

# one pre-LN transformer block forward (target ≤ 8; today 7: ln1, the q, k and v GEMMs
# with their biases as one kernel of three sibling GEMMs sharing the input, attention, the
# o GEMM with bias and residual, ln2, fc1 with bias and gelu, fc2 with bias and residual)
model block '[{"name": "out", "op": "encoder_layer", "in": "x", "heads": 4, "hidden": 256, "norm": "pre", "causal": true, "activation": "gelu_tanh"}]'
expect_at_most "pre-LN block forward" 7 "$(kernels block.json)"
"$kiln" check block.json --dump-after fuse >block.txt
grep -Eq "^kernel [0-9]+ gemm: %[0-9]+ %[0-9]+\*? \| %[0-9]+ %[0-9]+\*? \| " block.txt || fail "the q, k, v projections are not one GEMM kernel"

# the whole char_gpt training step (target ≤ 300; 217 without the light recomputation,
# 253 before the bias gradients joined the weight-gradient GEMMs): the optimizer update of
# every parameter is one MULTI kernel, and so is clipping's Σg² of every gradient
expect_at_most "char_gpt training step" 217 "$(kernels "$src/examples/char_gpt.json" --train --disable-pass recompute)"
# and with the backward pass's light recomputation (on by default; passes/checkpoint.c):
# one more kernel per recomputed gelu (6) and layernorm (13), 25 in all today
expect_at_most "char_gpt training step, recompute" 242 "$(kernels "$src/examples/char_gpt.json" --train)"
"$kiln" check "$src/examples/char_gpt.json" --train --dump-after fuse >gpt.txt
[[ $(grep -c "^kernel [0-9]* multi:" gpt.txt) -eq 2 ]] || fail "char_gpt: expected 2 multi-tensor kernels (update, sums of squares)"
# every linear layer's bias gradient runs in its weight-gradient GEMM's kernel: 6 layers ×
# (q, k, v, o, fc1, fc2) sums in gemm kernels, none of them a kernel of its own
biases=$(grep -E "^%[0-9]+ = sum\(.*\) axes=\[0,1\] : f32\[(384|1536)\]" gpt.txt | sed 's/ = .*//')
fused=0
for id in $biases; do grep -Eq "^kernel [0-9]+ gemm:.* $id\*" gpt.txt && fused=$((fused + 1)); done
[[ $fused -eq 36 ]] || fail "char_gpt: $fused bias gradients in GEMM kernels, expected 36"

# without fusion every node is its own kernel: far more
unfused=$("$kiln" check "$src/examples/char_gpt.json" --train --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["unfused_kernels"])')
[[ $unfused -gt 2000 ]] || fail "char_gpt without fusion: $unfused kernels, expected more than 2000"

finish
