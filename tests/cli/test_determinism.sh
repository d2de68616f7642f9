#!/usr/bin/env bash
# test_determinism.sh KILN SRCDIR — training is deterministic (docs/reliability.md,
# "Determinism"; docs/codegen.md, "Threads"):
#   - the same seed and thread count give the same checkpoint, byte for byte, after N
#     steps (dropout, AdamW, a shuffled data order, a trained BPE tokenizer);
#   - 1, 2 and 3 threads give bit-identical parameters, optimizer state and losses: the
#     promise is that every kernel gives the same bits for any thread count, and this
#     model's GEMMs, attention, layernorms and reductions are big enough to be split;
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts


"$py" - <<'PY'
import random
random.seed(2)
words = "the quick brown fox jumps over a lazy dog and then runs away from the big red barn".split()
open("text.txt", "w").write(" ".join(random.choice(words) for _ in range(4000)) + "\n")
PY
cat >det.json <<'JSON'
{
  "format": "kiln/1", "name": "det",
  "dims": {"B": 8, "T": 32},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 64},
    {"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": 32},
    {"name": "blocks", "op": "encoder_layer", "repeat": 1, "heads": 4, "hidden": 256, "norm": "pre",
     "causal": true, "activation": "gelu_tanh", "dropout": 0.1},
    {"name": "ln_f", "op": "layernorm"},
    {"name": "logits", "op": "linear", "out": 256, "bias": false, "tie": "wte.weight"}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 2, "grad_clip": 1.0},
  "tokenizer": {"kind": "bpe", "vocab": 256},
  "init": {"seed": 11}
}
JSON

train() { # train NAME THREADS [FLAGS...]
    local name=$1 threads=$2
    shift 2
    "$kiln" train det.json --data text.txt --steps 6 --threads "$threads" --save "$name.safetensors" \
        --log "$name.jsonl" "$@" >"$name.out" 2>&1 || fail "train $name: $(tail -n 3 "$name.out")"
}
train t1a 1
train t1b 1
train t2 2
train t3 3

cmp -s t1a.safetensors t1b.safetensors || fail "the same seed and --threads 1 gave different checkpoints"
"$py" - <<'PY' || fail "thread counts (above)"
import json
import numpy as np
import safetensors_np as st
def losses(name):
    return [json.loads(l)["loss"] for l in open(name + ".jsonl")]
ref = st.read("t1a.safetensors")
assert "optim.m.wte.weight" in ref and "optim.step" in ref
for name in ("t2", "t3"):
    got = st.read(name + ".safetensors")
    assert sorted(got) == sorted(ref), name
    bad = [k for k in ref if ref[k].tobytes() != got[k].tobytes()]
    assert not bad, f"{name}: not bit-identical to 1 thread: {bad[:5]}"
    assert losses(name) == losses("t1a"), f"{name}: losses {losses(name)} vs {losses('t1a')}"
assert losses("t1a")[-1] < losses("t1a")[0], "the model did not train"
print(f"1, 2, 3 threads: {len(ref)} tensors bit-identical after 6 steps; losses {losses('t1a')[0]:.4f} -> {losses('t1a')[-1]:.4f}")
PY

finish "ok"
