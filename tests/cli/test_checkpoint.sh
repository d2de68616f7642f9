#!/usr/bin/env bash
# test_checkpoint.sh KILN SRCDIR — --checkpoint-activations end to end:
#   - `kiln train` on a 3-block GPT with dropout gives bit-identical losses (every --log
#     line) and a bit-identical saved checkpoint with and without it, and without the
#     light recomputation of activations (--disable-pass recompute);
#   - `kiln check --train --checkpoint-activations` on examples/char_gpt.json finds the 6
#     blocks and plans a smaller training workspace than without (JSON figures), and the
#     text output names both workspaces; the light recomputation alone (on by default)
#     plans a smaller workspace than --disable-pass recompute; --memory prints the peak;
#   - `kiln bench --train` and `kiln compile --train` take the flag;
#   - the flag without --train is a usage error.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"


"$py" - <<'EOF'
import random
random.seed(3)
words = "the quick brown fox jumps over a lazy dog and then runs away from the big red barn".split()
open("text.txt", "w").write(" ".join(random.choice(words) for _ in range(3000)) + "\n")
EOF

cat >gpt.json <<'EOF'
{
  "format": "kiln/1", "name": "gpt",
  "dims": {"B": 4, "T": 24},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 64, "dim": 32},
    {"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": 24},
    {"name": "blocks", "op": "encoder_layer", "repeat": 3, "heads": 2, "hidden": 64, "norm": "pre",
     "causal": true, "activation": "gelu_tanh", "dropout": 0.1},
    {"name": "ln_f", "op": "layernorm"},
    {"name": "logits", "op": "linear", "out": 64, "bias": false, "tie": "wte.weight"}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 2, "grad_clip": 1.0},
  "tokenizer": {"kind": "char"},
  "init": {"seed": 5, "std": 0.02}
}
EOF

# ---- train: the same losses and the same checkpoint, bit for bit -----------------------------
for mode in plain ckpt norecompute; do
    flag=
    [[ $mode == ckpt ]] && flag=--checkpoint-activations
    [[ $mode == norecompute ]] && flag="--disable-pass recompute"
    run "train ($mode)" "$kiln" train gpt.json --data text.txt --steps 6 --threads 2 --val-every 100 \
        --save "$mode.safetensors" --log "$mode.jsonl" $flag || true
    cp out.txt "$mode.out"
done
grep -q "checkpointed activations: 3 blocks" ckpt.out || fail "train: no checkpointing line ($(cat ckpt.out))"
"$py" - <<'EOF' || fail "train: losses differ with --checkpoint-activations"
import json
def losses(p): return [json.loads(l)["loss"] for l in open(p)]
a, b, c = losses("plain.jsonl"), losses("ckpt.jsonl"), losses("norecompute.jsonl")
print("losses", a)
assert len(a) == 6 and a == b and a == c, (a, b, c)
assert a[-1] < a[0]
EOF
cmp -s plain.safetensors ckpt.safetensors || fail "train: the saved checkpoints differ"
cmp -s plain.safetensors norecompute.safetensors || fail "train: the saved checkpoints differ without recompute"

# ---- check: six blocks, a smaller workspace -----------------------------------------------------
model=$src/examples/char_gpt.json
run "check --json" "$kiln" check "$model" --train --checkpoint-activations --json &&
    "$py" - <<'EOF' || fail "check: $(cat out.txt)"
import json
o = json.load(open("out.txt"))
c = o["checkpoint"]
print("workspace", c["workspace_bytes_without"], "->", o["workspace_bytes"])
assert c["blocks"] == 6 and c["recomputed_nodes"] > 0
assert o["workspace_bytes"] * 1.5 < c["workspace_bytes_without"]
assert o["flops"] > c["flops_without"]
EOF
run "check text" "$kiln" check "$model" -D B=2 -D T=32 --train --checkpoint-activations &&
    { grep -q "^checkpointed activations: 6 blocks, .* without: workspace [0-9]* bytes" out.txt ||
        fail "check: text output ($(tail -n 3 out.txt))"; }

run "check --disable-pass recompute" "$kiln" check "$model" --train --json --disable-pass recompute &&
    cp out.txt norecompute.json
run "check --json" "$kiln" check "$model" --train --json && cp out.txt recompute.json
"$py" - <<'EOF' || fail "check: recompute does not shrink the workspace"
import json
o, n = json.load(open("recompute.json")), json.load(open("norecompute.json"))
print("workspace without recompute", n["workspace_bytes"], "->", o["workspace_bytes"])
assert o["workspace_bytes"] < n["workspace_bytes"] * 0.8
EOF
run "check --memory" "$kiln" check "$model" -D B=2 -D T=32 --train --memory &&
    { grep -q "^workspace peak: [0-9]* bytes .* live at position" out.txt && grep -q "^by op: " out.txt ||
        fail "check --memory: no peak report ($(tail -n 3 out.txt))"; }

# ---- bench and compile take it --------------------------------------------------------------------
run "bench --train" "$kiln" bench gpt.json --train --checkpoint-activations --iters 1 || true
run "compile --train" "$kiln" compile gpt.json --train --emit ir && plain=$(grep -c "= dropout" out.txt)
run "compile --train --checkpoint-activations" "$kiln" compile gpt.json --train --checkpoint-activations --emit ir &&
    { [[ $(grep -c "= dropout" out.txt) -gt $plain ]] || fail "compile: expected recomputed dropouts in the IR"; }

# ---- misuse -----------------------------------------------------------------------------------------
for cmd in check bench compile; do
    status=0
    extra=
    [[ $cmd == compile ]] && extra="--emit ir"
    "$kiln" $cmd gpt.json --checkpoint-activations $extra >out.txt 2>err.txt || status=$?
    [[ $status -eq 2 ]] && grep -q "add --train" err.txt || fail "$cmd without --train: exit $status, $(cat err.txt)"
done

finish "ok"
