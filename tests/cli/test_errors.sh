#!/usr/bin/env bash
# test_errors.sh KILN SRCDIR — errors that guide (issue 11, item 7):
#   - `kiln check` on a model with six independent problems lists all six, each with
#     file:line:column and its JSON path, misspelt keys ("casual", "bais") included even
#     in layers with another error, and exits 1;
#   - a plain-text file given to a TSV task is one line ("classify expects label<TAB>text"),
#     not one per line; a TSV with some bad lines (of any kind) lists five and counts the rest;
#   - another model's weights give one summary line, not one per parameter;
#   - --init into a head whose class count changed suggests renaming the layer;
#   - a misspelt input name in an inputs file gets "did you mean";
#   - an option's value out of its range is a usage error (exit 2);
#   - a data file, embed input, plot log or weights file that is not a regular file (/dev/zero, a FIFO)
#     is refused at once instead of read without end.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
expect() { # expect STATUS PATTERN DESCRIPTION CMD... — exit STATUS with PATTERN (grep -E) on stderr
    local want=$1 pattern=$2 what=$3 status=0
    shift 3
    "$@" >out.txt 2>err.txt || status=$?
    [[ $status -eq $want ]] || fail "$what: exit $status, want $want: $(head -c 400 err.txt)"
    grep -Eq -- "$pattern" err.txt || fail "$what: no '$pattern' in: $(head -c 800 err.txt)"
}

# ---- kiln check: every problem, with line:column -------------------------------------------------
cat >many.json <<'EOF'
{
  "format": "kiln/1", "name": "many",
  "dims": {"B": 4, "T": 16},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
    {"name": "att", "op": "attention", "heads": 3, "casual": true},
    {"name": "ff", "op": "linear", "out": -4, "bais": false},
    {"name": "n", "op": "layrnorm"},
    {"name": "logits", "op": "linear", "out": 256, "in": "nowhere"}
  ],
  "outputs": ["logits"]
}
EOF
expect 1 "kiln check: 6 errors" "check counts" "$kiln" check many.json
for want in "many.json:7:40: layers\[1\].heads: error: 16 is not divisible by 3" \
    "many.json:7:52: layers\[1\].casual: error: unknown key .*did you mean \"causal\"" \
    "many.json:8:36: layers\[2\].out: error:" \
    "many.json:8:47: layers\[2\].bais: error: unknown key .*did you mean \"bias\"" \
    "many.json:9:19: layers\[3\].op: error: unknown op 'layrnorm'" \
    "many.json:10:52: layers\[4\].in: error: 'nowhere'"; do
    grep -Eq -- "$want" err.txt || fail "check: no '$want' in: $(cat err.txt)"
done

# ---- data -----------------------------------------------------------------------------------------
"$py" - <<'EOF'
import random
random.seed(1)
w = "the quick brown fox jumps over a lazy dog".split()
lines = [" ".join(random.choice(w) for _ in range(8)) for _ in range(200)]
open("plain.txt", "w").write("\n".join(lines) + "\n")
open("mixed.tsv", "w").write("\n".join(("pos\t" if i % 3 else "") + l for i, l in enumerate(lines)) + "\n")
open("c.tsv", "w").write("".join(("pos\t" if i % 2 else "neg\t") + l + "\n" for i, l in enumerate(lines)))
EOF
cls() { # cls CLASSES
cat <<EOF
{
  "format": "kiln/1", "name": "cls",
  "dims": {"B": 4, "T": 8},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "mask": {"shape": ["B", "T"], "dtype": "f32"},
             "labels": {"shape": ["B"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 262, "dim": 16},
    {"name": "pooled", "op": "pool", "kind": "mean", "mask": "mask"},
    {"name": "logits", "op": "linear", "out": $1}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "labels"]}],
  "train": {"optimizer": "sgd", "lr": 0.1, "steps": 2}
}
EOF
}
cls 2 >cls.json
cls 3 >cls3.json
expect 1 "plain.txt: error: classify expects label<TAB>text on each line, but none of the 200 lines" "plain text" \
    "$kiln" train cls.json --task classify --data plain.txt
[[ $(grep -c ": error:" err.txt) -eq 1 ]] || fail "plain text: $(grep -c ": error:" err.txt) error lines"
expect 1 "mixed.tsv: error: and 62 more lines without 2 tab-separated fields" "mixed" \
    "$kiln" train cls.json --task classify --data mixed.tsv
[[ $(grep -c "mixed.tsv:[0-9]*:1: error: expected 2 tab-separated fields" err.txt) -eq 5 ]] ||
    fail "mixed: want five line errors: $(cat err.txt)"
# other bad lines (here empty labels, as labels unknown to a checkpoint): five listed, the rest counted
for i in $(seq 40); do printf 'pos\tgood\n\tno label\n'; done >nolabel.tsv
expect 1 "nolabel.tsv: error: and 35 more bad lines" "empty labels" \
    "$kiln" train cls.json --task classify --data nolabel.tsv
[[ $(grep -c "nolabel.tsv:[0-9]*:1: error: empty label" err.txt) -eq 5 ]] ||
    fail "empty labels: want five line errors: $(grep -c error: err.txt) lines"

# ---- weights ----------------------------------------------------------------------------------------
gpt() { # gpt LAYER_NAME
cat <<EOF
{
  "format": "kiln/1", "name": "g",
  "dims": {"B": 2, "T": 8},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
    {"name": "$1", "op": "encoder_layer", "repeat": 2, "heads": 2, "hidden": 32, "causal": true},
    {"name": "logits", "op": "linear", "out": 256}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}]
}
EOF
}
gpt blocks >a.json
gpt enc >b.json
"$kiln" init a.json -o a.safetensors >/dev/null
expect 1 "a.safetensors: error: [0-9]+ of the model's [0-9]+ parameters are missing from it .*weights of another model" \
    "another model's weights (eval)" "$kiln" eval b.json --weights a.safetensors --data plain.txt
[[ $(grep -c ": error:" err.txt) -eq 1 ]] || fail "another model's weights: $(grep -c ": error:" err.txt) error lines"
"$py" - <<'EOF'
import json, struct
n = 2 * 8
data = struct.pack(f"<{n}i", *[i % 60 for i in range(n)])
h = {"tokns": {"dtype": "I32", "shape": [2, 8], "data_offsets": [0, n * 4]}}
hb = json.dumps(h).encode()
open("x.safetensors", "wb").write(struct.pack("<Q", len(hb)) + hb + data)
EOF
expect 1 "weights of another model" "another model's weights (run)" \
    "$kiln" run b.json --weights a.safetensors --inputs x.safetensors --out y.safetensors
expect 1 "tokens: error: input missing from the inputs file; did you mean 'tokns'\?" "input did you mean" \
    "$kiln" run a.json --weights a.safetensors --inputs x.safetensors --out y.safetensors

# ---- --init into a changed head -----------------------------------------------------------------------
"$kiln" train cls.json --task classify --data c.tsv --steps 1 --save c.safetensors >/dev/null 2>&1 ||
    fail "train cls"
expect 1 "logits.weight: error: is f32\[2,16\] but the model needs f32\[3,16\]; to train this layer afresh, give it a new name in the model file \(e.g. \"logits_new\"\)" \
    "--init head" "$kiln" train cls3.json --task classify --data c.tsv --steps 1 --init c.safetensors

# ---- an index the model computes out of range: the compiled run names the node too ----------------
cat >gidx.json <<'EOF'
{"format": "kiln/1", "name": "gidx", "inputs": {"t": {"shape": [4, 3], "dtype": "f32"}},
 "layers": [{"name": "s", "op": "constant", "shape": [2], "values": [1, 7]},
            {"name": "i", "op": "cast", "in": "s", "dtype": "i32"},
            {"name": "g", "op": "gather", "in": ["t", "i"]}],
 "outputs": ["g"]}
EOF
"$py" - <<'EOF'
import json, struct
h = json.dumps({"t": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 48]}}).encode()
open("t.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + bytes(48))
open("empty.safetensors", "wb").write(struct.pack("<Q", 2) + b"{}")
EOF
for mode in "" --interp; do
    expect 1 "gidx.json: layers\\[2\\]: error: gather 'g' .*index 7 .*out of range \\[0, 4\\)" "computed index $mode" \
        "$kiln" run gidx.json --weights empty.safetensors --inputs t.safetensors --out y.safetensors $mode
done

# ---- out-of-range option values are usage errors (status 2), before the model is read ----------------
expect 2 "--threads: error: expected 1..1024" "train --threads 0" "$kiln" train cls.json --data c.tsv --threads 0
expect 2 "--val-batches: error: expected at least 1" "train --val-batches 0" \
    "$kiln" train cls.json --data c.tsv --val c.tsv --val-batches 0
expect 2 "unknown CPU 'bogus'" "compile --target-cpu bogus" "$kiln" compile cls.json -o x.so --target-cpu bogus
grep -q " pentium4 " err.txt && fail "the valid CPU names include the 32-bit pentium4: $(head -c 300 err.txt)"
# LLVM stops with a fatal error on these (a 32-bit CPU; AVX-512 without VL added to an AVX2 CPU)
expect 2 "--target-cpu: error: 'i686' is a 32-bit CPU" "compile --target-cpu i686" \
    "$kiln" compile cls.json -o x.so --target-cpu i686
for f in +avx512f +avx512f,+avx512bw; do
    expect 2 "--target-features: error: '\+avx512f' on a CPU without AVX-512 \(haswell\) needs avx512vl too: add \+avx512vl" \
        "compile --target-cpu haswell --target-features $f" \
        "$kiln" compile cls.json -o x.so --target-cpu haswell --target-features $f
done
[[ -e x.so ]] && fail "a refused --target-cpu/--target-features left x.so"

# ---- a single-valued option given twice is refused; --disable-pass adds up -------------------
expect 2 "^-o: error: given twice" "compile -o twice" "$kiln" compile cls.json -o x.a -o y.so
[[ -e x.a || -e y.so ]] && fail "compile -o x.a -o y.so wrote a library"
expect 2 "^--seed: error: given twice" "init --seed twice" "$kiln" init cls.json -o w.safetensors --seed 1 --seed 2
kernels() { "$kiln" check cls.json --json "$@" | tr ',' '\n' | grep '"kernels"'; }
[[ $(kernels --disable-pass fuse --disable-pass simplify) == "$(kernels --disable-pass fuse,simplify)" ]] ||
    fail "--disable-pass fuse --disable-pass simplify: $(kernels --disable-pass fuse --disable-pass simplify), not as fuse,simplify: $(kernels --disable-pass fuse,simplify)"

# ---- compile: model names that are kiln's own symbols (kiln_params_load is the runtime's loader) ----
for name in kiln_params kiln; do
    sed "s/\"name\": \"cls\"/\"name\": \"$name\"/" cls.json >reserved.json
    expect 1 "name: error: '$name' is reserved" "compile a model named $name" "$kiln" compile reserved.json -o x.so
done
[[ -e x.so ]] && fail "a model with a reserved name left x.so"
expect 2 "--iters: error: must be in 1..1000" "bench --iters 0" "$kiln" bench cls.json --iters 0

# ---- data files that never end (/dev/zero) or wait (a FIFO): refused at once, as models and weights are ----
mkfifo fifo
for args in "train cls.json --task classify --data /dev/zero" "train cls.json --task classify --data c.tsv --val /dev/zero" \
    "eval cls.json --weights c.safetensors --data /dev/zero" "plot /dev/zero -o p.svg" "plot fifo -o p.svg" \
    "embed cls.json --weights c.safetensors --input /dev/zero --out e.safetensors" \
    "eval cls.json --weights fifo --data c.tsv" "train cls.json --task classify --data c.tsv --init fifo"; do
    expect 1 "(/dev/zero|fifo): error: not a regular file" "$args" timeout 20 "$kiln" $args
done

finish "ok"
