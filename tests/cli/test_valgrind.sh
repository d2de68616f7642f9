#!/usr/bin/env bash
# test_valgrind.sh KILN SRCDIR — valgrind memcheck over kiln's command line end to end:
#   - `kiln check` on a model file with errors (the frontend's error paths);
#   - `kiln train` a few steps with --save and --log (JIT compile and the training step's
#     generated kernels; the KV-cache prefill and decode kernels run under memcheck in the
#     exported generate.c below, and `kiln generate`'s own C code under ASan in
#     test_generate: a `kiln generate` here added 25–30 s of CI time and nothing else);
#   - the exported-library examples: examples/deploy/deploy.c and generate.c built against
#     `kiln compile` artifacts, run under valgrind (kiln itself runs natively there).
# Each run must report zero memcheck errors and zero definitely lost blocks; "possibly
# lost" is allowed (LLVM's and glibc's own caches are freed by the OS at exit).
#
# valgrind 3.19 does not emulate AVX-512. Under valgrind the JIT sees valgrind's CPUID
# and generates AVX2 code by itself; the exported libraries are compiled with
# --target-cpu haswell for the same reason. Exit 77 (skipped) when valgrind is missing
# or the build is sanitized (the two cannot be combined).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
cc=${CC:-cc}

if ! command -v valgrind >/dev/null; then
    echo "test_valgrind: valgrind is not installed (apt-get install valgrind): skipped"
    exit 77
fi
if readelf -d "$kiln" 2>/dev/null | grep -q libasan || nm "$kiln" 2>/dev/null | grep -q __asan_init; then
    echo "test_valgrind: $kiln is built with AddressSanitizer, which valgrind cannot run: skipped"
    exit 77
fi

runs=0
# vg DESCRIPTION WANT_STATUS CMD... — runs CMD under memcheck; its status must be WANT_STATUS
# and memcheck must find nothing (memcheck's own status is 99, distinct from kiln's 0–3).
vg() {
    local what=$1 want=$2 status=0
    shift 2
    runs=$((runs + 1))
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --show-leak-kinds=definite --track-origins=no --log-file=vg.txt "$@" >out.txt 2>err.txt || status=$?
    if [[ $status -eq 99 || -s vg.txt ]]; then
        fail "$what: memcheck found errors:"
        head -n 40 vg.txt
    elif [[ $status -ne $want ]]; then
        fail "$what: exit $status, expected $want — $(head -n 5 err.txt)"
    fi
}

/usr/bin/python3 - <<'EOF'
import random
random.seed(3)
words = "the quick brown fox jumps over a lazy dog and then runs away".split()
open("text.txt", "w").write(" ".join(random.choice(words) for _ in range(3000)) + "\n")
EOF
cat >tiny.json <<'EOF'
{
  "format": "kiln/1", "name": "tiny",
  "dims": {"B": 4, "T": 16},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 32},
    {"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": 16},
    {"name": "blocks", "op": "encoder_layer", "repeat": 1, "heads": 2, "hidden": 64,
     "norm": "pre", "causal": true, "activation": "gelu_tanh", "dropout": 0.1},
    {"name": "ln_f", "op": "layernorm"},
    {"name": "logits", "op": "linear", "out": 256, "bias": false, "tie": "wte.weight"}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 1e-2, "warmup_steps": 1, "grad_clip": 1.0},
  "init": {"seed": 7}
}
EOF
# three independent mistakes: an unknown op, a misspelt key, a dim that is not defined
cat >bad.json <<'EOF'
{
  "format": "kiln/1", "name": "bad",
  "dims": {"B": 2},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 64, "dim": 16},
    {"name": "blk", "op": "encoder_layer", "heads": 2, "hidden": 32, "casual": true},
    {"name": "out", "op": "lineer", "out": 4}
  ],
  "outputs": ["out"]
}
EOF

# ---- kiln itself --------------------------------------------------------------------------
vg "check (model with errors)" 1 "$kiln" check bad.json
vg "train 3 steps" 0 "$kiln" train tiny.json --data text.txt --steps 3 --save ck.safetensors --log log.jsonl
[[ -s ck.safetensors ]] || fail "train under valgrind wrote no checkpoint"

# ---- exported libraries (compiled natively, run under valgrind) ---------------------------
# examples/char_gpt.json's architecture at a tenth of its width and a third of its depth,
# under the same name (the examples include char_gpt.h and call char_gpt_*): every
# instruction of the generated code runs under memcheck, and the full model's 43 MB of
# weights made these three runs about 70 s of CPU; this one keeps every kernel kind
gpt=gpt_small.json
sed -e 's/"dim": 384/"dim": 48/' -e 's/"hidden": 1536/"hidden": 192/' -e 's/"repeat": 6/"repeat": 2/' \
    "$src/examples/char_gpt.json" >$gpt
grep -q '"dim": 48' $gpt && grep -q '"repeat": 2' $gpt || fail "examples/char_gpt.json changed: the shrinking sed no longer applies"
mkdir fwd gen
# each artifact's header and entry points are named after the model (char_gpt_*)
if "$kiln" init "$gpt" -o gpt.safetensors --seed 4 >/dev/null 2>err.txt &&
    "$kiln" compile "$gpt" -D B=1 -D T=16 --target-cpu haswell -o fwd/libchar_gpt.a --header fwd/char_gpt.h \
        >/dev/null 2>>err.txt &&
    "$kiln" compile "$gpt" -D T=32 --target-cpu haswell --generate -o gen/libchar_gpt.a --header gen/char_gpt.h \
        >/dev/null 2>>err.txt; then
    if "$cc" -std=c17 -O1 -g -Ifwd "$src/examples/deploy/deploy.c" fwd/libchar_gpt.a -lm -lpthread -o deploy 2>cc.txt &&
        "$cc" -std=c17 -O1 -g -Igen "$src/examples/deploy/generate.c" gen/libchar_gpt.a -lm -lpthread -o gen_c 2>>cc.txt; then
        vg "examples/deploy/deploy.c" 0 ./deploy gpt.safetensors "hello, kiln"
        vg "examples/deploy/generate.c (greedy)" 0 ./gen_c gpt.safetensors "Hello" 6
        vg "examples/deploy/generate.c (top-k)" 0 ./gen_c gpt.safetensors "Hello" 6 0.9 10 5
    else
        fail "the deploy examples do not build: $(head -n 5 cc.txt)"
    fi
else
    fail "kiln compile for the deploy examples failed: $(head -n 5 err.txt)"
fi

if [[ $failures -gt 0 ]]; then
    echo "test_valgrind: $failures failure(s) in $runs runs"
    exit 1
fi
echo "test_valgrind: ok ($runs runs under memcheck, no errors, no definite leaks)"
