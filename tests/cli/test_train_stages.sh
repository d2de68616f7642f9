#!/usr/bin/env bash
# test_train_stages.sh KILN SRCDIR — the pipeline's training stages (passes/pipeline.c,
# kiln_pipeline_train): `--dump-after autodiff` prints the graph with the backward pass
# and no optimizer yet, `--dump-after optimizer` the whole step, on check, run --grads and
# bench; every stage's dump prints the IR (epilogue's the kernels too, as fuse's); a stage the command does not run (a training stage without --train or --grads,
# any stage with --interp) is a usage error, for --dump-after and --disable-pass alike. And RoPE inside the attention
# kernels (passes/fuse.c): an attention with position "rope" is still 3 kernels forward,
# in its training step no slice, concat, neg or unslice of the rotation runs as a kernel
# of its own, and with attention dropout 2 training steps match the unfused step's
# losses (about 3 s in all).
set -euo pipefail
kiln=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

cat >tiny.json <<'JSON'
{"format": "kiln/1", "name": "tiny", "dims": {"B": 2},
 "inputs": {"x": {"shape": ["B", 4], "dtype": "f32"}, "y": {"shape": ["B", 3], "dtype": "f32"}},
 "layers": [{"name": "fc", "op": "linear", "in": "x", "out": 3}],
 "outputs": ["fc"],
 "losses": [{"op": "mse", "in": ["fc", "y"]}],
 "train": {"optimizer": "adamw", "lr": 1e-3}}
JSON

# after autodiff: the weight's gradient (a matmul reading the input x, %0), no optimizer state
"$kiln" check tiny.json --train --dump-after autodiff >ad.txt
grep -Eq "^%[0-9]+ = matmul\(%[0-9]+, %0\) transpose_a : f32\[3,4\]" ad.txt || fail "autodiff: no weight gradient in the dump"
grep -q " = state " ad.txt && fail "autodiff: the dump already has optimizer state"
grep -q "^graph tiny" ad.txt || fail "autodiff: no IR text"
# after optimizer: the lr input, AdamW's state and the updates
"$kiln" check tiny.json --train --dump-after optimizer >opt.txt
grep -q '= input "lr"' opt.txt || fail "optimizer: no lr input"
grep -q '= state "optim.m.fc.weight"' opt.txt || fail "optimizer: no AdamW state"
[[ $(grep -c "^update " opt.txt) -ge 2 ]] || fail "optimizer: no updates"
[[ $(wc -l <opt.txt) -gt $(wc -l <ad.txt) ]] || fail "optimizer: the dump is not longer than autodiff's"
# every stage --help names prints something (a stage once printed nothing: epilogue); epilogue,
# a part of fusion's one call, prints what fuse prints: the IR, then the kernels (a gemm here)
stages=$("$kiln" check --help | sed -n 's/.*print the IR after a stage: \(.*\) (default.*/\1/p' | sed 's/,\| or / /g')
[[ $stages == *epilogue* ]] || fail "check --help names no epilogue stage: '$stages'"
for stage in $stages; do
    "$kiln" check tiny.json --train --dump-after "$stage" >"dump.$stage.txt" 2>err.txt ||
        fail "check --train --dump-after $stage: $(head -n 2 err.txt)"
    grep -q "^graph tiny" "dump.$stage.txt" || fail "check --train --dump-after $stage printed no IR"
done
grep -Eq "^kernel [0-9]+ gemm:" dump.epilogue.txt || fail "--dump-after epilogue: no kernel lines"
cmp -s dump.fuse.txt dump.epilogue.txt || fail "--dump-after epilogue differs from --dump-after fuse"
# the same stage through run --grads (autodiff alone: gradients w.r.t. the parameters and x)
"$kiln" init tiny.json -o w.safetensors >/dev/null
/usr/bin/python3 - <<'PY'
import struct, json
def write(path, tensors):
    header, data, off = {}, b"", 0
    for name, (shape, vals) in tensors.items():
        raw = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
write("in.safetensors", {"x": ([2, 4], [0.1 * i for i in range(8)]), "y": ([2, 3], [0.5] * 6)})
PY
"$kiln" run tiny.json --weights w.safetensors --inputs in.safetensors --out out.safetensors --grads \
    --dump-after autodiff >run.txt
grep -q "^graph tiny" run.txt || fail "run --grads --dump-after autodiff printed no IR"
grep -q " = state " run.txt && fail "run --grads: optimizer state in the autodiff dump"
# a training stage without a training step
if "$kiln" check tiny.json --dump-after autodiff >/dev/null 2>err.txt; then
    fail "check --dump-after autodiff without --train succeeded"
fi
grep -q "training stage" err.txt || fail "no message naming the training stage: $(cat err.txt)"
# a stage the command's compilation does not run (no IR would be printed): a usage error
refused() { # refused TEXT ARGS... — kiln ARGS exits 2 with TEXT on stderr
    local text=$1 status=0
    shift
    "$kiln" "$@" >/dev/null 2>err.txt || status=$?
    [[ $status -eq 2 ]] && grep -q -- "$text" err.txt || fail "$*: exit $status, $(head -n 2 err.txt)"
}
refused "'recompute' is a training stage: add --train" check tiny.json --dump-after recompute
refused "'optimizer' is a training stage: add --train" compile tiny.json -o t.so --dump-after optimizer
refused "'autodiff' is a training stage: add --grads" run tiny.json --weights w.safetensors --inputs in.safetensors \
    --out o.safetensors --dump-after autodiff
refused "'optimizer' is a stage of a whole training step" run tiny.json --weights w.safetensors \
    --inputs in.safetensors --out o.safetensors --grads --dump-after optimizer
refused "the interpreter compiles nothing" run tiny.json --weights w.safetensors --inputs in.safetensors \
    --out o.safetensors --interp --dump-after fuse
# --disable-pass refuses such a stage the same way (it would turn off nothing)
refused "--disable-pass: error: 'recompute' is a training stage: add --train" check tiny.json --disable-pass recompute
refused "--disable-pass: error: 'recompute' is a training stage: add --train" compile tiny.json -o t.so \
    --disable-pass fuse,recompute
refused "'recompute' is a stage of a whole training step, which --grads does not compile" run tiny.json \
    --weights w.safetensors --inputs in.safetensors --out o.safetensors --grads --disable-pass recompute
refused "--disable-pass: error: 'fuse' does not run: the interpreter compiles nothing" run tiny.json \
    --weights w.safetensors --inputs in.safetensors --out o.safetensors --interp --disable-pass fuse
refused "'recompute' is a training stage: this command compiles no training step" generate tiny.json \
    --weights w.safetensors --prompt a --disable-pass recompute
refused "'recompute' is a training stage: add --train" bench tiny.json --disable-pass recompute
[[ -e t.so || -e o.safetensors ]] && fail "a refused --dump-after or --disable-pass wrote an output"
"$kiln" check tiny.json --train --disable-pass recompute,fuse >/dev/null 2>err.txt ||
    fail "check --train --disable-pass recompute,fuse: $(head -n 2 err.txt)"
"$kiln" run tiny.json --weights w.safetensors --inputs in.safetensors --out o.safetensors --disable-pass fuse \
    2>err.txt || fail "run --disable-pass fuse: $(head -n 2 err.txt)"

# RoPE inside the attention kernels
cat >rope.json <<'JSON'
{"format": "kiln/1", "name": "rope", "dims": {"B": 2, "T": 24},
 "inputs": {"x": {"shape": ["B", "T", 64], "dtype": "f32"}, "t": {"shape": ["B", "T", 64], "dtype": "f32"}},
 "layers": [{"name": "out", "op": "attention", "in": "x", "heads": 4, "causal": true, "bias": false, "position": "rope"}],
 "outputs": ["out"],
 "losses": [{"op": "mse", "in": ["out", "t"]}],
 "train": {"optimizer": "sgd", "lr": 0.1}}
JSON
n=$("$kiln" check rope.json --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["kernels"])')
[[ $n -le 3 ]] || fail "attention with rope forward: $n kernels, expected at most 3 (q/k/v GEMMs, attention, o GEMM)"
"$kiln" check rope.json --train --dump-after fuse >rope.txt
grep -Eq "^%[0-9]+ = unslice" rope.txt || fail "the rope training step has no rotation gradient to fuse (test is stale)"
for id in $(grep -E "^%[0-9]+ = (slice|concat|neg|unslice)\(" rope.txt | sed 's/ = .*//'); do
    grep -Eq "^kernel [0-9]+ (node|loop):.* $id\*?( |$)" rope.txt && fail "rope node $id runs in a kernel of its own"
done
grep -Eq "^kernel [0-9]+ attention_grad:.* %[0-9]+ .*" rope.txt || fail "no attention_grad kernel"

# with attention dropout too: 2 training steps give the losses of the unfused step (the
# rotations as kernels of their own, the same dropout masks), and dropout does change them
cat >clm.json <<'JSON'
{"format": "kiln/1", "name": "clm", "dims": {"B": 2, "T": 40},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}, "targets": {"shape": ["B", "T"], "dtype": "i32"}},
 "layers": [{"name": "x", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 64},
            {"name": "a", "op": "attention", "in": "x", "heads": 4, "causal": true, "position": "rope", "dropout": 0.2},
            {"name": "logits", "op": "linear", "in": "a", "out": 256}],
 "outputs": ["logits"],
 "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
 "train": {"optimizer": "adamw", "lr": 1e-3},
 "tokenizer": {"kind": "byte"}, "init": {"seed": 3, "std": 0.5}}
JSON
head -c 4000 "$src/README.md" >data.txt
losses() { /usr/bin/python3 -c 'import json, sys; print(" ".join("%.7f" % json.loads(l)["loss"] for l in open(sys.argv[1])))' "$1"; }
# whether the losses in files $1 and $2 differ by at most $3 (relative) at every step
close() { /usr/bin/python3 -c 'import json, sys
a, b = ([json.loads(l)["loss"] for l in open(f)] for f in sys.argv[1:3])
sys.exit(0 if len(a) == len(b) == 2 and all(abs(x - y) <= float(sys.argv[3]) * abs(y) for x, y in zip(a, b)) else 1)' "$@"; }
"$kiln" train clm.json --data data.txt --steps 2 --log fused.jsonl --save f.ckpt >/dev/null
"$kiln" train clm.json --data data.txt --steps 2 --log unfused.jsonl --save u.ckpt --disable-pass fuse >/dev/null
sed 's/"dropout": 0.2/"dropout": 0.0/' clm.json >nodrop.json
"$kiln" train nodrop.json --data data.txt --steps 2 --log nodrop.jsonl --save n.ckpt >/dev/null
echo "losses with rope and attention dropout: $(losses fused.jsonl) (fused), $(losses unfused.jsonl) (unfused), $(losses nodrop.jsonl) (no dropout)"
close fused.jsonl unfused.jsonl 1e-5 ||
    fail "rope + attention dropout: fused losses $(losses fused.jsonl) vs unfused $(losses unfused.jsonl)"
close fused.jsonl nodrop.jsonl 1e-4 && fail "attention dropout changed nothing (test is stale)"

if [[ $failures -gt 0 ]]; then
    echo "test_train_stages: $failures failure(s)"
    exit 1
fi
echo "test_train_stages: ok"
