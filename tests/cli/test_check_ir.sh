#!/usr/bin/env bash
# test_check_ir.sh KILN SRCDIR — IR text (docs/ir.md) as a model: what `kiln check
# --dump-ir` prints, saved as NAME.kir, gives the same figures to `kiln check` (forward
# FLOPs, kernels, workspace) as the model file, for every example; `kiln init` and the
# compiled `kiln run` on the .kir give the model file's bits; a training step's figures
# come from the default train section; and the refusals, with their places: a parse
# error, -D, an update line, a state node, a name that is not a C symbol, and the
# commands that need the model file's text (train, eval, generate, compile --generate).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts

# ---- every example: the same forward figures from its IR text ------------------------------
for model in "$src"/examples/*.json; do
    name=$(basename "$model" .json)
    kiln_ok "check --dump-ir $name" check "$model" --dump-ir || continue
    cp out.txt "$name.kir"
    kiln_ok "check $name.json" check "$model" || continue
    grep -E '^forward (FLOPs|kernels|workspace)' out.txt >"$name.want"
    kiln_ok "check $name.kir" check "$name.kir" || continue
    grep -E '^forward (FLOPs|kernels|workspace)' out.txt >"$name.got"
    [[ $(wc -l <"$name.want") -eq 3 ]] || fail "$name: check printed no forward figures"
    cmp -s "$name.want" "$name.got" || fail "$name: the .kir's figures differ: $(diff "$name.want" "$name.got" | head -n 4)"
    # the text printed back from the .kir is the text it was read from
    kiln_ok "check $name.kir --dump-ir" check "$name.kir" --dump-ir || continue
    cmp -s out.txt "$name.kir" || fail "$name: --dump-ir of the .kir differs from the .kir"
done

# ---- the same bits from kiln init and the compiled kiln run --------------------------------
rope=$src/tests/cli/generate/gen_rope.json
kiln_ok "dump gen_rope" check "$rope" --dump-ir && cp out.txt rope.kir
kiln_ok "init json" init "$rope" -o wj.safetensors --seed 3
kiln_ok "init kir" init rope.kir -o wk.safetensors --seed 3
cmp -s wj.safetensors wk.safetensors || fail "kiln init: the .kir's weights differ from the model file's"
"$py" - <<'EOF2'
import numpy as np
import safetensors_np as st
rng = np.random.default_rng(5)
st.write("x.safetensors", {"tokens": rng.integers(0, 256, size=(2, 32)).astype("<i4")})
EOF2
kiln_ok "run json" run "$rope" --weights wj.safetensors --inputs x.safetensors --out yj.safetensors
kiln_ok "run kir" run rope.kir --weights wj.safetensors --inputs x.safetensors --out yk.safetensors
cmp -s yj.safetensors yk.safetensors || fail "kiln run: the .kir's outputs differ from the model file's"

# ---- --train: the step of the graph and its loss, with the default train section ------------
kiln_ok "check rope.kir --train" check rope.kir --train --json
"$py" - out.txt <<'EOF2' || fail "check --train on the .kir (above)"
import json, sys
o = json.load(open(sys.argv[1]))
assert o["kernels"] > 0 and o["flops"] > 0 and o["optim_bytes"] > 0, o
EOF2

# ---- refusals --------------------------------------------------------------------------------
cat >bad.kir <<'EOF2'
graph bad
%0 = input "x" : f32[2,3]
%1 = relu(%2) : f32[2,3]
output "y" = %1
EOF2
kiln_fails "a reference to a later node" 1 "bad.kir:3:11" check bad.kir
kiln_fails "-D" 1 "dims cannot be bound" check rope.kir -D T=16
sed 's/^graph gen_rope/graph Gen-Rope/' rope.kir >name.kir
kiln_fails "a name that is not a symbol" 1 "must match" check name.kir
kiln_ok "dump the training step" check "$rope" --train --dump-after optimizer && cp out.txt step.kir
grep -q '^update ' step.kir || fail "--dump-after optimizer printed no update line"
kiln_fails "update lines" 1 "update lines" check step.kir
cat >state.kir <<'EOF2'
graph cached
%0 = input "x" : f32[2,3]
%1 = state "kv" : f32[2,3]
%2 = add(%0, %1) : f32[2,3]
output "y" = %2
EOF2
kiln_fails "a state node" 1 "state node %1" check state.kir
echo "some text to train on" >text.txt
kiln_fails "train" 1 "this needs the model file" train rope.kir --data text.txt --steps 1
kiln_fails "eval" 1 "this needs the model file" eval rope.kir --weights wj.safetensors --data text.txt
kiln_fails "generate" 1 "this needs the model file" generate rope.kir --weights wj.safetensors --prompt hi
kiln_fails "compile --generate" 1 "this needs the model file" compile rope.kir --generate -o g.a --header g.h

finish
