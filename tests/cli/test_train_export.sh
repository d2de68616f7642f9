#!/usr/bin/env bash
# test_train_export.sh KILN SRCDIR — `kiln compile --train` end to end, in a temp dir.
#
# The model is tests/conformance/cases/024_gpt_tiny at batch 1 with a `train` section
# (adamw, weight decay, gradient clipping, constant lr) and vocab 256, because `kiln
# train --task clm` (byte tokenizer) wants that many rows. It is compiled with --train
# to a .so + header and to an .a; examples/deploy/train_step.c, built against each, runs
# 5 steps on one fixed batch. The reference is `kiln train --init` on a .bin file of
# exactly T+1 ids, whose only window is that batch, with the same constant lr: the JIT
# training step from the same graph builder. Its --log losses (%.9g, exact for an f32)
# and its checkpoint's parameters must equal the program's bit for bit — both compile
# the same graph for the same host CPU. Also: the losses decrease; the header has the
# SPEC's additions (and a plain compile has none of them); the split step
# (NAME_train_grad, averaging, NAME_train_apply: examples/deploy/train_split.c with two
# simulated ranks) matches kiln train to float rounding; the artifacts need only
# libc/libm and export the seven entry points; --emit shows the training step; a model
# without losses is a diagnostic.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts
cc=${CC:-cc}

# the model, and the data file holding exactly the batch train_step.c uses
"$py" - "$src/tests/conformance/cases/024_gpt_tiny/model.json" <<'EOF'
import json, struct, sys
m = json.load(open(sys.argv[1]))
m["dims"]["B"] = 1
for layer in m["layers"]:
    if layer["name"] == "wte": layer["vocab"] = 256
    if layer["name"] == "logits": layer["out"] = 256
m["train"] = {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.1, "grad_clip": 1.0,
              "schedule": "constant", "warmup_steps": 0}
json.dump(m, open("gpt_tiny.json", "w"), indent=1)
del m["losses"]
json.dump(m, open("no_loss.json", "w"), indent=1)
T = m["dims"]["T"]
open("data.bin", "wb").write(struct.pack("<%dH" % (T + 1), *[(7 * i + 3) % 17 for i in range(T + 1)]))
EOF
model=gpt_tiny.json
run "init" "$kiln" init $model -o w.safetensors --seed 3 || finish

# ---- the reference: kiln train (JIT) --------------------------------------------------------
run "kiln train" "$kiln" train $model --data data.bin --init w.safetensors --steps 5 --save ck.safetensors \
    --log log.jsonl || finish
"$py" -c "
import json
for line in open('log.jsonl'):
    r = json.loads(line)
    if 'loss' in r: print('step %d loss %.9g' % (r['step'], r['loss']))" >expected_losses.txt
[[ $(wc -l <expected_losses.txt) -eq 5 ]] || fail "kiln train logged $(wc -l <expected_losses.txt) losses, expected 5"

# ---- the exported training step ----------------------------------------------------------------
run "compile --train .so" "$kiln" compile $model --train -o libgpt_tiny.so --header gpt_tiny.h || finish
run "compile --train .a" "$kiln" compile $model --train -o libgpt_tiny.a
[[ -z $(ls -A | grep '^\.kiln-') ]] || fail "temporaries left behind: $(ls -A | grep '^\.kiln-')"
for want in '#define GPT_TINY_OPTIM_BYTES [1-9]' '#define GPT_TINY_TRAIN_WORKSPACE_BYTES [1-9]' \
    'int gpt_tiny_train_step(float \*params, float \*optim, void \*workspace,' 'int gpt_tiny_forward('; do
    grep -q "$want" gpt_tiny.h || fail "header lacks '$want'"
done
# the argument order of SPEC section 6: inputs in model order, lr, loss
tr -d '\n' <gpt_tiny.h | grep -q 'gpt_tiny_train_step([^)]*const int32_t \*tokens[^)]*const int32_t \*targets[^)]*float lr,[^)]*float \*loss' ||
    fail "gpt_tiny_train_step's arguments are not (params, optim, workspace, tokens, targets, lr, loss)"
run "compile without --train" "$kiln" compile $model -o libplain.so --header plain.h &&
    grep -q -e TRAIN -e OPTIM -e train_step plain.h && fail "a plain compile's header mentions training"

cflags=(-std=c17 -Wall -Wextra -Werror -O2 -I.)
run "cc against the .so" "$cc" "${cflags[@]}" "$src/examples/deploy/train_step.c" -L. -lgpt_tiny \
    -Wl,-rpath,"$work" -o train_so
run "cc against the .a" "$cc" "${cflags[@]}" "$src/examples/deploy/train_step.c" libgpt_tiny.a -lm -o train_a
for kind in so a; do
    [[ -x train_$kind ]] || continue
    run "train_step ($kind)" "./train_$kind" w.safetensors "trained_$kind.safetensors" 5 0.01 || continue
    cp out.txt "losses_$kind.txt"
    cmp -s expected_losses.txt "losses_$kind.txt" ||
        fail "train_step ($kind) losses differ from kiln train's: $(paste -d' ' expected_losses.txt "losses_$kind.txt" | tr '\n' '|')"
    "$py" - "trained_$kind.safetensors" <<'EOF' >cmp.txt || fail "train_step ($kind): $(cat cmp.txt)"
import sys
import numpy as np
import safetensors_np as st
got, ref, init = st.read(sys.argv[1]), st.read("ck.safetensors"), st.read("w.safetensors")
bad = [k for k in init if k not in got or got[k].dtype != np.float32 or got[k].shape != ref[k].shape
       or not np.array_equal(got[k].view(np.uint32), ref[k].view(np.uint32))]
if bad or len(got) != len(init):
    sys.exit("parameters differ from kiln train's checkpoint: %s" % " ".join(bad[:5]))
if all(np.array_equal(got[k], init[k]) for k in init):
    sys.exit("no parameter changed")
EOF
done
if [[ -f losses_so.txt ]]; then
    awk '{ if (NR > 1 && $4 >= prev) bad = 1; prev = $4 } END { exit bad }' losses_so.txt ||
        fail "losses do not decrease: $(tr '\n' '|' <losses_so.txt)"
fi

# ---- the split step: gradients, averaged by the program, then the update (train_split.c) ----------
for want in '#define GPT_TINY_SPLIT_OPTIM_BYTES [1-9]' '#define GPT_TINY_GRAD_OFFSET [1-9]' \
    '#define GPT_TINY_GRAD_FLOATS [1-9]' 'int gpt_tiny_train_apply(float \*params, float \*optim, void \*workspace, float lr);'; do
    grep -q "$want" gpt_tiny.h || fail "header lacks '$want'"
done
tr -d '\n' <gpt_tiny.h | grep -q 'gpt_tiny_train_grad(const float \*params, float \*optim, void \*workspace,[^)]*tokens[^)]*targets[^)]*float \*loss' ||
    fail "gpt_tiny_train_grad's arguments are not (params, optim, workspace, tokens, targets, loss)"
if run "cc train_split.c" "$cc" "${cflags[@]}" "$src/examples/deploy/train_split.c" libgpt_tiny.a -lm -o train_split &&
    run "train_split" ./train_split w.safetensors split.safetensors 5 0.01; then
    cp out.txt losses_split.txt
    "$py" - <<'EOF' >cmp.txt || fail "train_split: $(cat cmp.txt)"
import numpy as np
import safetensors_np as st
want = [float(l.split()[3]) for l in open("expected_losses.txt")]
got = [float(l.split()[3]) for l in open("losses_split.txt")]
assert len(got) == len(want) and all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(got, want)), (got, want)
a, b = st.read("split.safetensors"), st.read("ck.safetensors")
for k in a:
    d = float(np.max(np.abs(a[k] - b[k])))
    assert d <= 1e-5 * max(1.0, float(np.max(np.abs(b[k])))), f"{k}: differs from kiln train's by {d}"
EOF
fi

# ---- what the artifacts depend on and export -------------------------------------------------
libc=$("$cc" -print-file-name=libc.so.6)
libm=$("$cc" -print-file-name=libm.so.6)
nm -D --defined-only "$libc" "$libm" 2>/dev/null | awk 'NF >= 3 {print $3}' | sed 's/@.*//' | sort -u >system_symbols.txt
for artifact in libgpt_tiny.so libgpt_tiny.a; do
    nm -u "$artifact" | awk '$1 == "U" {print $2}' | sed 's/@.*//' | sort -u >undef.txt
    foreign=$(comm -23 undef.txt system_symbols.txt | tr '\n' ' ')
    [[ -z $foreign ]] || fail "$artifact needs symbols outside libc/libm: $foreign"
    [[ -s undef.txt ]] || fail "$artifact: nm -u looks empty"
    exported=$(nm -g --defined-only "$artifact" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[TDRB]$/ {print $3}' | sort | tr '\n' ' ')
    want="gpt_tiny_forward gpt_tiny_load gpt_tiny_params gpt_tiny_set_threads gpt_tiny_train_apply gpt_tiny_train_grad gpt_tiny_train_step "
    [[ $exported == "$want" ]] || fail "$artifact exports '$exported', expected '$want'"
done

# ---- --emit shows the training step; no losses, no training step -------------------------------
run "emit llvm --train" "$kiln" compile $model --train --emit llvm &&
    { grep -q '^define .*i32 @gpt_tiny_train_step(' out.txt || fail "--emit llvm --train lacks the entry"; }
run "emit ir --train" "$kiln" compile $model --train --emit ir &&
    { grep -q 'adamw\|optim' out.txt || fail "--emit ir --train shows no optimizer: $(head -n 2 out.txt)"; }
status=0
"$kiln" compile no_loss.json --train -o libno.so >out.txt 2>err.txt || status=$?
[[ $status -eq 1 ]] && grep -q "no losses" err.txt || fail "--train without losses: exit $status, $(head -n 3 err.txt)"
[[ ! -e libno.so ]] || fail "--train without losses wrote libno.so"

finish
