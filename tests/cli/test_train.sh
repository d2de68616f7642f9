#!/usr/bin/env bash
# test_train.sh KILN SRCDIR — `kiln train` and `kiln eval` end to end on tiny models:
#   - a 1-layer GPT (d=32) learns generated text: the loss falls within 30 steps;
#   - every --log line is a JSON object with step, loss, lr, tokens_per_s, and val_loss
#     on validation steps;
#   - resuming is exact: 20 steps straight and 10 + --resume + 10 give bit-identical
#     parameters and optimizer state, with dropout on;
#   - SIGINT finishes the step, saves and exits 130 with "interrupted at step N", not an
#     error; the checkpoint is at that step;
#   - kill -9 at random moments of a run that saves every step never leaves a
#     checkpoint that fails to load;
#   - --init loads what the file has, initialises and lists a new head, and reports the
#     names the model lacks;
#   - eval prints loss and perplexity, and accuracy for a classifier it trained;
#   - span examples whose answers end past T are left out with a warning;
#   - a resume without --task takes the checkpoint's, another --task is refused, and so
#     is another optimizer (or SGD without the momentum the checkpoint holds);
#   - a .bin file's ids are checked against the model's vocabulary when it is loaded;
#   - check --train describes the training step;
#   - misuse fails with a clear message.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

# ---- data and models ------------------------------------------------------------------------
"$py" - <<'EOF'
import random
random.seed(1)
words = "the quick brown fox jumps over a lazy dog and then runs away from the big red barn".split()
open("text.txt", "w").write(" ".join(random.choice(words) for _ in range(6000)) + "\n")
open("val.txt", "w").write(" ".join(random.choice(words) for _ in range(800)) + "\n")
good, bad = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]
with open("cls.tsv", "w") as f:
    for i in range(400):
        pos = random.random() < 0.5
        f.write(("pos\t" if pos else "neg\t") + " ".join(random.choice(good if pos else bad) for _ in range(3)) + "\n")
EOF

gpt() { # gpt NAME HEAD — a 1-layer GPT; HEAD is its output layer
cat <<EOF
{
  "format": "kiln/1", "name": "$1",
  "dims": {"B": 8, "T": 32},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 32},
    $3
    {"name": "blocks", "op": "encoder_layer", "repeat": 1, "heads": 2, "hidden": 64,
     "norm": "pre", "causal": true, "activation": "gelu_tanh"},
    {"name": "ln_f", "op": "layernorm"},
    $2
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1, "warmup_steps": 5,
            "schedule": "cosine", "grad_clip": 1.0},
  "init": {"seed": 7}
}
EOF
}
gpt tiny '{"name": "logits", "op": "linear", "out": 256, "bias": false, "tie": "wte.weight"}' \
    '{"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": 32},' >tiny.json
# the same body with an untied head of its own and sinusoidal positions (no wpe.weight)
gpt tiny2 '{"name": "logits", "op": "linear", "out": 256}' \
    '{"name": "pe", "op": "pos_encoding", "kind": "sinusoidal", "max_len": 32},' >tiny2.json
cat >cls.json <<'EOF'
{
  "format": "kiln/1", "name": "tiny_cls",
  "dims": {"B": 16, "T": 8},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "mask": {"shape": ["B", "T"], "dtype": "f32"},
             "labels": {"shape": ["B"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 262, "dim": 16},
    {"name": "enc", "op": "encoder_layer", "heads": 2, "hidden": 32, "norm": "pre", "mask": "mask"},
    {"name": "pooled", "op": "pool", "kind": "mean", "mask": "mask"},
    {"name": "logits", "op": "linear", "out": 2}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "labels"]}],
  "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "steps": 60}
}
EOF

# ---- the loss falls; the log ----------------------------------------------------------------
run "train 30 steps" "$kiln" train tiny.json --data text.txt --val val.txt --val-every 10 --val-batches 4 \
    --steps 30 --log log.jsonl --save a.safetensors || true
grep -q "saved a.safetensors at step 30" out.txt || fail "train did not report its checkpoint: $(cat out.txt)"
"$py" - <<'EOF' || fail "the metrics log (above)"
import json, math
lines = open("log.jsonl").read().splitlines()
assert len(lines) == 30, f"{len(lines)} log lines, want 30"
rows = [json.loads(l) for l in lines]
for i, r in enumerate(rows):
    for k in ("step", "loss", "lr", "tokens_per_s"):
        assert k in r, f"line {i + 1} lacks {k}: {r}"
    assert r["step"] == i + 1, r
    assert ("val_loss" in r) == (r["step"] % 10 == 0), f"val_loss on the wrong steps: {r}"
assert abs(rows[0]["lr"] - 2e-3) < 1e-9 and abs(rows[4]["lr"] - 1e-2) < 1e-9, "warmup"
assert rows[-1]["lr"] < 1e-3, "cosine decay"
first = rows[0]["loss"]
last = sum(r["loss"] for r in rows[-5:]) / 5
print(f"loss {first:.3f} -> {last:.3f}, val_loss {rows[9]['val_loss']:.3f} -> {rows[-1]['val_loss']:.3f}")
assert first > 5 and last < first - 2, "the loss did not fall"
assert rows[-1]["val_loss"] < rows[9]["val_loss"], "the validation loss did not fall"
EOF

# ---- eval ---------------------------------------------------------------------------------------
run "eval" "$kiln" eval tiny.json --weights a.safetensors --data val.txt || true
"$py" - <<'EOF' || fail "eval's output: $(cat out.txt)"
import math, re
t = open("out.txt").read()
loss = float(re.search(r"^loss ([0-9.]+)$", t, re.M).group(1))
ppl = float(re.search(r"^perplexity ([0-9.]+)$", t, re.M).group(1))
assert loss < 3.5 and abs(ppl - math.exp(loss)) < 1e-3 * ppl, t
EOF

# ---- resume is exact ------------------------------------------------------------------------------
# (with dropout, whose masks are seeded by the step counter in the optimizer state)
"$py" - <<'EOF'
import json
m = json.load(open("tiny.json"))
m["layers"][2]["dropout"] = 0.1
json.dump(m, open("tinyd.json", "w"))
EOF
run "20 steps straight" "$kiln" train tinyd.json --data text.txt --steps 20 --save full.safetensors || true
run "10 steps" "$kiln" train tinyd.json --data text.txt --steps 20 --stop-at 10 --save part.safetensors || true
run "--resume for 10 more" "$kiln" train tinyd.json --data text.txt --resume part.safetensors \
    --save part.safetensors || true
grep -q "resuming at step 10 of 20" out.txt || fail "resume did not start at step 10: $(cat out.txt)"
"$py" - "$src/scripts" <<'EOF' || fail "resumed training differs from straight training (above)"
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np
a, b = safetensors_np.read("full.safetensors"), safetensors_np.read("part.safetensors")
assert sorted(a) == sorted(b), "different tensors"
assert "optim.m.wte.weight" in a and "optim.v.blocks.0.ff.fc1.weight" in a and "optim.step" in a
bad = [k for k in a if a[k].tobytes() != b[k].tobytes()]
assert not bad, f"not bit-identical: {bad[:5]}"
assert a["optim.step"] == 20
EOF
run "20 steps with another --seed" "$kiln" train tinyd.json --data text.txt --steps 20 --seed 8 \
    --save other.safetensors || true
cmp -s full.safetensors other.safetensors && fail "--seed 8 trained the same weights as the default seed"

# ---- against PyTorch (when /usr/bin/python3 has it) --------------------------------------------
# Three AdamW steps with warmup, weight decay and clipping of the 1-layer GPT on one
# window (33 bytes: every batch row is the same) against torch in float64.
if "$py" -c "import torch" 2>/dev/null; then
    printf 'the quick brown fox jumps over a ' >one.txt
    run "init for torch" "$kiln" init tiny.json -o w0.safetensors || true
    run "3 steps for torch" "$kiln" train tiny.json --data one.txt --steps 3 --save s3.safetensors || true
    "$py" - "$src/scripts" <<'EOF' || fail "the training step differs from PyTorch's (above)"
import math, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
import safetensors_np
torch.set_default_dtype(torch.float64)
w0, got = safetensors_np.read("w0.safetensors"), safetensors_np.read("s3.safetensors")
P = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in w0.items()}
text = open("one.txt", "rb").read()
ids = torch.tensor(list(text[:32])).repeat(8, 1)
tgt = torch.tensor(list(text[1:33])).repeat(8, 1)
def ln(x, p): return torch.nn.functional.layer_norm(x, (32,), P[p + ".weight"], P[p + ".bias"], 1e-5)
def lin(x, p): return x @ P[p + ".weight"].T + P[p + ".bias"]
def loss_fn():
    x = P["wte.weight"][ids] + P["wpe.weight"][:32]
    h = ln(x, "blocks.0.ln1")
    B, T, D = h.shape
    q, k, v = (lin(h, "blocks.0.attn." + n).view(B, T, 2, 16).transpose(1, 2) for n in "qkv")
    s = (q @ k.transpose(-1, -2) / 4.0).masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), -math.inf)
    x = x + lin((s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D), "blocks.0.attn.o")
    h = lin(torch.nn.functional.gelu(lin(ln(x, "blocks.0.ln2"), "blocks.0.ff.fc1"), approximate="tanh"),
            "blocks.0.ff.fc2")
    x = ln(x + h, "ln_f")
    return torch.nn.functional.cross_entropy((x @ P["wte.weight"].T).view(-1, 256), tgt.view(-1))
params = list(P.values())
opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
for s in range(3):
    for g in opt.param_groups:
        g["lr"] = float(np.float32(1e-2 * (s + 1) / 5))  # warmup 5 steps, as kiln's schedule
    opt.zero_grad()
    loss_fn().backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
worst = max(np.abs(P[k].detach().numpy() - got[k]).max() for k in P)
m = opt.state[P["wte.weight"]]["exp_avg"].numpy()
print(f"vs PyTorch after 3 steps: max |parameter difference| {worst:.2e}")
assert worst < 2e-5, worst
# float32 against float64: torch itself in float32 is 0.45e-6 of max |m| off here, kiln 2.3e-6
# (its summation orders and 4-ULP vector math); a wrong rule is off by far more
assert np.abs(m - got["optim.m.wte.weight"]).max() < 5e-6 * np.abs(m).max() + 1e-9
EOF
else
    echo "PyTorch not found: skipping the comparison with torch.optim.AdamW"
fi

# ---- SIGINT: finish the step, save, exit non-zero ------------------------------------------
"$kiln" train tiny.json --data text.txt --steps 1000000 --log int.jsonl --save int.safetensors \
    >int.out 2>int.err &
pid=$!
# A background job of a non-interactive shell starts with SIGINT ignored: kiln installs
# its handler only when the loop starts, so wait for the first logged step however long
# compiling takes (minutes under the sanitizers on a loaded machine), or the signal is lost.
for _ in $(seq 3000); do [[ -s int.jsonl ]] && break; sleep 0.1; done
[[ -s int.jsonl ]] || { kill -9 $pid; fail "SIGINT: no step logged in 300 s"; }
sleep 0.2
kill -INT $pid
# never hang the suite: a run that ignores the signal is killed and reported (a polling
# loop, not a background `sleep`, which would hold ctest's pipe open until it ends)
for _ in $(seq 1200); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then kill -9 $pid; fail "SIGINT: still training 120 s after the signal"; fi
status=0
wait $pid || status=$?
[[ $status -eq 130 ]] || fail "SIGINT: exit status $status, want 130"
grep -q "error" int.err && fail "SIGINT: reported as an error: $(cat int.err)"
grep -q "interrupted at step [0-9]* of 1000000; checkpoint saved to int.safetensors" int.err || fail "SIGINT: no message: $(cat int.err)"
"$py" - "$src/scripts" <<'EOF' || fail "SIGINT: the checkpoint is not at the last logged step (above)"
import json, struct
b = open("int.safetensors", "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
steps = len(open("int.jsonl").read().splitlines())
assert int(meta["step"]) == steps, (meta["step"], steps)
EOF

# ---- kill -9 while saving every step never leaves a bad checkpoint ------------------------------
# An untrained 4 MiB ballast parameter makes saving most of each step, so most kills land
# inside a write (the temporary file left behind shows it).
"$py" - <<'EOF'
import json
m = json.load(open("tiny.json"))
m["layers"].append({"name": "ballast", "op": "param", "shape": [1024, 1024]})
json.dump(m, open("heavy.json", "w"))
EOF
in_write=0
for i in 1 2 3 4 5; do
    "$kiln" train heavy.json --data text.txt --steps 1000000 --save-every 1 --save k.safetensors \
        >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 3000); do [[ -s k.safetensors ]] && break; sleep 0.1; done
    sleep "0.$((RANDOM % 40 + 5))"
    kill -9 $pid
    wait $pid 2>/dev/null || true
    "$kiln" eval heavy.json --weights k.safetensors --data val.txt >/dev/null 2>k.err ||
        fail "kill -9 round $i: the checkpoint does not load: $(head -n 3 k.err)"
    compgen -G "k.safetensors.tmp.*" >/dev/null && in_write=$((in_write + 1))
    rm -f k.safetensors.tmp.*
done
echo "kill -9: $in_write of 5 kills landed inside a checkpoint write; every checkpoint loaded"

# ---- --init: load what is there, initialise the rest --------------------------------------------
run "--init with a new head" "$kiln" train tiny2.json --data text.txt --steps 3 --init a.safetensors || true
grep -q "loaded 19 of 21 parameters" out.txt || fail "--init count: $(cat out.txt)"
grep -q "initialised logits.weight f32\[256,32\]" out.txt || fail "--init did not list logits.weight: $(cat out.txt)"
grep -q "initialised logits.bias f32\[256\]" out.txt || fail "--init did not list logits.bias"
grep -q "ignored wpe.weight" out.txt || fail "--init did not report wpe.weight, which tiny2 lacks"

# ---- classify: train, then eval's accuracy ---------------------------------------------------------
run "train a classifier" "$kiln" train cls.json --task classify --data cls.tsv --save cls.safetensors || true
run "eval the classifier" "$kiln" eval cls.json --weights cls.safetensors --data cls.tsv || true
"$py" - <<'EOF' || fail "classifier accuracy: $(cat out.txt)"
import re
t = open("out.txt").read()
acc = float(re.search(r"^accuracy ([0-9.]+)$", t, re.M).group(1))
assert acc > 0.95, t
EOF
# a resumed run takes --task from its checkpoint (here classify, at its last step)
run "resume the classifier without --task" "$kiln" train cls.json --data cls.tsv --resume cls.safetensors || true
grep -q "nothing to do" out.txt || fail "resume without --task: $(cat out.txt err.txt)"

# ---- check --train describes the training step ------------------------------------------------
run "check --train" "$kiln" check tiny.json --train --json || true
cp out.txt check_train.json
run "check" "$kiln" check tiny.json --json || true
"$py" - <<'EOF' || fail "check --train (above)"
import json
t, f = json.load(open("check_train.json")), json.load(open("out.txt"))
assert t["flops"] > 2.5 * f["flops"], (t["flops"], f["flops"])  # forward + backward + update
assert t["kernels"] > f["kernels"] and t["workspace_bytes"] > f["workspace_bytes"]
assert t["optim_bytes"] >= 2 * 4 * t["params"] and "optim_bytes" not in f
EOF

# ---- misuse -----------------------------------------------------------------------------------------
expect_fail() { # expect_fail STATUS TEXT CMD... — exits with STATUS and says TEXT
    local want=$1 text=$2
    shift 2
    local status=0
    "$@" >out.txt 2>err.txt || status=$?
    [[ $status -eq $want ]] || fail "$*: exit $status, want $want"
    grep -q -- "$text" err.txt || fail "$*: no '$text' in: $(head -n 3 err.txt)"
}
expect_fail 2 "--data PATH is required" "$kiln" train tiny.json --steps 3
expect_fail 2 "cannot be combined" "$kiln" train tiny.json --data text.txt --init a.safetensors --resume a.safetensors
expect_fail 2 "did you mean --steps?" "$kiln" train tiny.json --data text.txt --stpes 3
expect_fail 1 "does not fill this input" "$kiln" train tiny.json --data cls.tsv --task classify --steps 3
"$kiln" init tiny.json -o w.safetensors
expect_fail 1 "not a checkpoint of kiln train" "$kiln" train tiny.json --data text.txt --resume w.safetensors
expect_fail 1 "trained with --task classify, not clm" "$kiln" train cls.json --data cls.tsv --task clm \
    --resume cls.safetensors
# --resume continues a run with its own optimizer: another one, or other settings that keep
# other state (SGD's momentum), is refused rather than dropping the state without a word
sed 's/"optimizer": "adamw"/"optimizer": "sgd"/' tiny.json >sgd.json
sed 's/"optimizer": "adamw"/"optimizer": "sgd", "momentum": 0.9/' tiny.json >sgdm.json
expect_fail 1 "trained with adamw, the model file asks for sgd" "$kiln" train sgd.json --data text.txt \
    --resume a.safetensors --steps 40
run "1 step of SGD with momentum" "$kiln" train sgdm.json --data text.txt --steps 1 --save m.safetensors || true
expect_fail 1 "optim.momentum.wte.weight: error: is optimizer state the model's optimizer does not keep" \
    "$kiln" train sgd.json --data text.txt --resume m.safetensors --steps 2
# --init keeps the pretrained model's tokenizer (its weights know those ids) and says so
# when the model file asks for another kind
sed 's/"init": {"seed": 7}/"init": {"seed": 7}, "tokenizer": {"kind": "char"}/' tiny.json >tinychar.json
sed 's/"init": {"seed": 7}/"init": {"seed": 7}, "tokenizer": {"kind": "byte"}/' tiny.json >tinybyte.json
run "1 step with a char tokenizer" "$kiln" train tinychar.json --data text.txt --steps 1 --save char.safetensors || true
run "--init from it, asking for bytes" "$kiln" train tinybyte.json --data text.txt --steps 1 --init char.safetensors || true
grep -q "asks for a byte tokenizer; training goes on with the char tokenizer char.safetensors was trained with" err.txt ||
    fail "--init replaced the model file's tokenizer kind without a word: $(cat err.txt)"

# span examples whose answers end past T are left out, and the user is told how many
cat >qa.json <<'EOF'
{"format": "kiln/1", "name": "tqa", "dims": {"B": 2, "T": 24},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}, "mask": {"shape": ["B", "T"], "dtype": "i32"},
            "start": {"shape": ["B"], "dtype": "i32"}, "end": {"shape": ["B"], "dtype": "i32"}},
 "layers": [{"name": "emb", "op": "embedding", "in": "tokens", "vocab": 262, "dim": 16},
            {"name": "qa", "op": "linear", "out": 2},
            {"name": "s0", "op": "slice", "axis": -1, "start": 0, "end": 1},
            {"name": "sl", "op": "reshape", "shape": ["B", "T"]},
            {"name": "e0", "op": "slice", "in": "qa", "axis": -1, "start": 1, "end": 2},
            {"name": "el", "op": "reshape", "shape": ["B", "T"]}],
 "outputs": ["sl", "el"],
 "losses": [{"op": "cross_entropy", "in": ["sl", "start"]}, {"op": "cross_entropy", "in": ["el", "end"]}]}
EOF
printf 'the cat sat\twhere?\tcat\nabcdefghijklmnopqrstuvwxyz 0123\tqq\t0123\n' >qa.tsv
"$kiln" init qa.json -o qa.safetensors >/dev/null
run "eval with a span past T" "$kiln" eval qa.json --weights qa.safetensors --data qa.tsv --task span || true
grep -q "warning: qa.tsv: 1 of 2 examples are left out: their answers end past the 24 positions" err.txt ||
    fail "eval left a span example out without a word: $(cat err.txt)"
printf 'short' >short.txt
expect_fail 1 "needs at least 33" "$kiln" train tiny.json --data short.txt --steps 3
expect_fail 1 "make the vocab at least 262" "$kiln" train tiny.json --task mlm --data text.txt --steps 1
# a .bin file's ids are checked against the model's vocabulary (256), not the tokenizer's (262)
"$py" -c "import struct; v = [5] * 200; v[50] = 258; open('id258.bin', 'wb').write(struct.pack('<200H', *v))"
expect_fail 1 "token 258 at index 50 is outside the vocabulary (256 ids)" "$kiln" train tiny.json --data id258.bin \
    --steps 1
expect_fail 1 "token 258 at index 50 is outside the vocabulary (256 ids)" "$kiln" eval tiny.json \
    --weights a.safetensors --data id258.bin

finish
