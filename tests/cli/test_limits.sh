#!/usr/bin/env bash
# test_limits.sh KILN SRCDIR — models too large are refused before allocation
# (driver/memlimit.c), never by a crash or the OOM killer:
#   - train, run, eval, bench, generate and embed with --max-memory below what the model needs
#     fail with the figure, its parts and the largest tensors named;
#   - a model needing ~100 GiB is refused against --max-memory 1G without allocating
#     (quickly, and with the T×vocab logits named);
#   - sizes: 512K, 4G, 1.5GiB parse; 12x, 0, -1 are usage errors;
#   - dims whose product overflows 64 bits, or exceeds the per-tensor limit, are refused
#     by shape inference with the JSON path;
#   - an unknown --target-cpu is an error listing valid names.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
expect() { # expect STATUS PATTERN DESCRIPTION CMD... — the command exits STATUS with PATTERN on stderr
    local want=$1 pattern=$2 what=$3 status=0
    shift 3
    "$@" >out.txt 2>err.txt || status=$?
    [[ $status -eq $want ]] || fail "$what: exit $status, want $want: $(head -c 400 err.txt)"
    grep -q -- "$pattern" err.txt || fail "$what: no '$pattern' in: $(head -c 600 err.txt)"
}

"$py" -c "
import random; random.seed(1)
w='the quick brown fox jumps over a lazy dog'.split()
open('text.txt','w').write(' '.join(random.choice(w) for _ in range(3000)))"
gpt() { # gpt B T VOCAB
cat <<EOF
{
  "format": "kiln/1", "name": "g",
  "dims": {"B": $1, "T": $2},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": $3, "dim": 16},
    {"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": $2},
    {"name": "logits", "op": "linear", "out": $3}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 1e-3, "steps": 2}
}
EOF
}
gpt 4 16 256 >small.json
gpt 64 4096 50000 >huge.json
"$kiln" init small.json -o w.safetensors >/dev/null
"$py" - <<'EOF'
import json, struct
n = 4 * 16
data = struct.pack(f"<{n}i", *[i % 200 for i in range(n)]) * 2
h = {"tokens": {"dtype": "I32", "shape": [4, 16], "data_offsets": [0, n * 4]},
     "targets": {"dtype": "I32", "shape": [4, 16], "data_offsets": [n * 4, n * 8]}}
hb = json.dumps(h).encode()
open("x.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + data)
EOF

refused="refused before allocating. The largest tensors: "
expect 1 "train: error: needs .* but --max-memory is 100.0 KiB: $refused" "train" \
    "$kiln" train small.json --data text.txt --max-memory 100K
expect 1 "$refused.*logits f32\[4,16,256\]" "train names the logits" \
    "$kiln" train small.json --data text.txt --max-memory 100K
expect 1 "run: error: needs .*(parameters .* + workspace .* + inputs and outputs" "run" \
    "$kiln" run small.json --weights w.safetensors --inputs x.safetensors --out y.safetensors --max-memory 4K
[[ ! -e y.safetensors ]] || fail "run wrote its output after a refusal"
expect 1 "eval: error: needs .*$refused" "eval" \
    "$kiln" eval small.json --weights w.safetensors --data text.txt --max-memory 4K
expect 1 "bench: error: needs .*$refused" "bench" "$kiln" bench small.json --max-memory 4K
expect 1 "generate: error: needs .*$refused" "generate" \
    "$kiln" generate small.json --weights w.safetensors --prompt "the" --max-new 2 --max-memory 4K
cat >pooled.json <<'EOF'
{"format": "kiln/1", "name": "p", "dims": {"B": 4, "T": 16},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
 "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 262, "dim": 16},
            {"name": "pooled", "op": "pool", "kind": "mean"}],
 "outputs": ["pooled"]}
EOF
"$kiln" init pooled.json -o wp.safetensors >/dev/null
expect 1 "embed: error: needs .*$refused" "embed" \
    "$kiln" embed pooled.json --weights wp.safetensors --input text.txt --out e.safetensors --max-memory 4K
[[ ! -e e.safetensors ]] || fail "embed wrote its output after a refusal"
# within the budget: works
"$kiln" bench small.json --iters 1 --max-memory 1.5GiB >out.txt 2>err.txt || fail "bench within 1.5GiB: $(cat err.txt)"
# ~100 GiB: refused at once against 1G, naming the (B,T,vocab) logits
expect 1 "but --max-memory is 1.0 GiB: $refused.*f32\[64,4096,50000\] .*(48.8 GiB)" "huge" \
    "$kiln" bench huge.json --train --max-memory 1G

# sizes
for bad in 12x 0 -1 4Q; do
    expect 2 "expected a size in bytes such as 1000000, 512M or 4G, got '$bad'" "--max-memory $bad" \
        "$kiln" train small.json --data text.txt --max-memory "$bad"
done

# dims: overflowing 64-bit products and the per-tensor limit
cat >dims.json <<'EOF'
{"format": "kiln/1", "name": "d", "dims": {"N": 4611686018427387904},
 "inputs": {"x": {"shape": ["N", "N", 8], "dtype": "f32"}},
 "layers": [{"name": "y", "op": "relu", "in": "x"}], "outputs": ["y"]}
EOF
expect 1 "inputs.x: error: .*is too large" "overflowing dims" "$kiln" check dims.json
expect 1 "is too large (over" "a dim over the tensor limit" "$kiln" bench small.json -D B=40000000

# --target-cpu: an unknown name is a usage error (status 2)
expect 2 "unknown CPU 'nosuchcpu'. Valid names: .*znver" "--target-cpu" \
    "$kiln" compile small.json -o out.so --target-cpu nosuchcpu

finish "ok"
