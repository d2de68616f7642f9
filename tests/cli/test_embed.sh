#!/usr/bin/env bash
# test_embed.sh KILN SRCDIR — `kiln embed`, one pooled embedding per line of a text file:
#   - by default it reads the model's pool layer; its rows equal that layer's value (and
#     with --output, another output's) computed by `kiln run` on the inputs laid out by
#     hand (<cls> first, the line's bytes, <pad> after, the mask), so the layout and the
#     reading of the output are the documented ones; with a batch of 2 over 5 lines the
#     last call is partly filler, which is not written; an empty line is an item; the same
#     bits at 1 thread and at the default (the online CPUs); the
#     labels input, which only the loss reads, needs nothing;
#   - an encoder-decoder's src gets the line as seq2seq training lays it out (no <cls>);
#   - --normalize gives rows of norm 1, the same directions; --output picks a tower of a
#     two-tower model (tokens_a/tokens_b), whose inputs both get the line; a checkpoint of
#     `kiln train --task pairs` embeds with its weights;
#   - a model with no pooled value, an unknown --output, a missing flag or input file,
#     and an input embed cannot fill fail with a message and write nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

cat >enc.json <<'EOF'
{
  "format": "kiln/1", "name": "enc",
  "dims": {"B": 2, "T": 12},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}, "mask": {"shape": ["B", "T"], "dtype": "i32"},
             "labels": {"shape": ["B"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 262, "dim": 32},
    {"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": 12},
    {"name": "blk", "op": "encoder_layer", "heads": 2, "hidden": 64, "norm": "pre", "mask": "mask"},
    {"name": "pooled", "op": "pool", "kind": "mean", "mask": "mask"},
    {"name": "proj", "op": "linear", "out": 16}
  ],
  "outputs": ["proj", "pooled", "blk"],
  "losses": [{"op": "cross_entropy", "in": ["proj", "labels"]}],
  "init": {"seed": 3}
}
EOF
printf 'the quick brown fox\n\nkiln\r\njumps over the lazy dog, which is longer than twelve\nlast line without newline' >lines.txt
kiln_ok "init" init enc.json -o w.safetensors
kiln_ok "embed" embed enc.json --weights w.safetensors --input lines.txt --out e.safetensors
grep -q "5 lines, 32-dimensional embeddings from output 'pooled'" out.txt || fail "embed's summary: $(cat out.txt)"
kiln_ok "embed --normalize" embed enc.json --weights w.safetensors --input lines.txt --out n.safetensors --normalize \
    --batch 3 --threads 2
kiln_ok "embed --output proj" embed enc.json --weights w.safetensors --input lines.txt --out p.safetensors \
    --output proj
kiln_ok "embed --threads 1" embed enc.json --weights w.safetensors --input lines.txt --out e1.safetensors --threads 1
cmp -s <("$py" -c "import sys; sys.path.insert(0, '$src/scripts'); import safetensors_np as s; sys.stdout.buffer.write(s.read('e.safetensors')['embeddings'].tobytes())") \
       <("$py" -c "import sys; sys.path.insert(0, '$src/scripts'); import safetensors_np as s; sys.stdout.buffer.write(s.read('e1.safetensors')['embeddings'].tobytes())") ||
    fail "embed at 1 thread and at the default (the online CPUs) differ"

# the same rows by hand: byte tokenizer, specials after 256 (<pad> 256, <cls> 260)
"$py" - "$src" <<'EOF' || fail "kiln run on the same layout"
import sys, numpy as np
sys.path.insert(0, sys.argv[1] + "/scripts")
import safetensors_np
lines = open("lines.txt", "rb").read().split(b"\n")
lines = [l[:-1] if l.endswith(b"\r") else l for l in lines]
T = 12
tok = np.full((len(lines), T), 256, np.int32)
mask = np.zeros((len(lines), T), np.int32)
for i, l in enumerate(lines):
    ids = [260] + list(l)[:T - 1]
    tok[i, :len(ids)] = ids
    mask[i, :len(ids)] = 1
safetensors_np.write("x.safetensors", {"tokens": tok, "mask": mask, "labels": np.zeros(len(lines), np.int32)})
EOF
kiln_ok "run on the same layout" run enc.json -D B=5 --weights w.safetensors --inputs x.safetensors --out y.safetensors
"$py" - "$src" <<'EOF' || fail "embeddings differ from kiln run's output"
import sys, numpy as np
sys.path.insert(0, sys.argv[1] + "/scripts")
import safetensors_np
e = safetensors_np.read("e.safetensors")["embeddings"]
n = safetensors_np.read("n.safetensors")["embeddings"]
p = safetensors_np.read("p.safetensors")["embeddings"]
out = safetensors_np.read("y.safetensors")
y, proj = out["pooled"], out["proj"]
assert e.shape == (5, 32) and e.dtype == np.float32 and p.shape == (5, 16), (e.shape, p.shape)
for got, want in ((e, y), (p, proj)):
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, f"embed vs run: relative difference {err}"
assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5), np.linalg.norm(n, axis=1)
assert np.abs(n - y / np.linalg.norm(y, axis=1, keepdims=True)).max() < 1e-5
assert len({tuple(r) for r in e.round(5)}) == 5, "rows repeat"
EOF

# a two-tower model: both towers get the line; --output picks one
cat >pairs.json <<'EOF'
{
  "format": "kiln/1", "name": "towers",
  "dims": {"B": 4, "T": 8},
  "inputs": {"tokens_a": {"shape": ["B", "T"], "dtype": "i32"}, "mask_a": {"shape": ["B", "T"], "dtype": "f32"},
             "tokens_b": {"shape": ["B", "T"], "dtype": "i32"}, "mask_b": {"shape": ["B", "T"], "dtype": "f32"}},
  "layers": [
    {"name": "ea", "op": "embedding", "in": "tokens_a", "vocab": 262, "dim": 8},
    {"name": "pa", "op": "pool", "kind": "first"},
    {"name": "eb", "op": "embedding", "in": "tokens_b", "vocab": 262, "dim": 8},
    {"name": "pb", "op": "pool", "kind": "mean", "mask": "mask_b"},
    {"name": "qb", "op": "linear", "out": 8}
  ],
  "outputs": ["pa", "qb"],
  "losses": [{"op": "infonce", "in": ["pa", "qb"]}],
  "init": {"seed": 5}
}
EOF
kiln_ok "init towers" init pairs.json -o p.safetensors
kiln_ok "embed tower a" embed pairs.json --weights p.safetensors --input lines.txt --out a.safetensors
kiln_ok "embed tower b" embed pairs.json --weights p.safetensors --input lines.txt --out b.safetensors --output qb
"$py" - "$src" <<'EOF' || fail "the towers' embeddings"
import sys, numpy as np
sys.path.insert(0, sys.argv[1] + "/scripts")
import safetensors_np
w = safetensors_np.read("p.safetensors")
a = safetensors_np.read("a.safetensors")["embeddings"]
b = safetensors_np.read("b.safetensors")["embeddings"]
assert a.shape == (5, 8) and b.shape == (5, 8), (a.shape, b.shape)
# pool first reads <cls>'s row of tower a's embedding
assert np.abs(a - w["ea.weight"][260]).max() == 0
EOF

# a checkpoint of `kiln train --task pairs`: its tokenizer and weights
printf 'a cat\tthe cat\na dog\tthe dog\nred sky\tthe sky\nblue sea\tthe sea\n' >pairs.tsv
kiln_ok "train --task pairs" train pairs.json --data pairs.tsv --task pairs --steps 2 --save ck.safetensors
kiln_ok "embed from the checkpoint" embed pairs.json --weights ck.safetensors --input lines.txt --out c.safetensors \
    --output qb
"$py" - "$src" <<'EOF' || fail "embeddings from the trained checkpoint"
import sys, numpy as np
sys.path.insert(0, sys.argv[1] + "/scripts")
import safetensors_np
b = safetensors_np.read("b.safetensors")["embeddings"]
c = safetensors_np.read("c.safetensors")["embeddings"]
assert c.shape == b.shape and np.isfinite(c).all() and np.abs(c - b).max() > 0, "training changed nothing"
EOF

# an encoder-decoder's encoder: src is laid out as seq2seq training lays it out, the line
# bare (no <cls>), <pad> after, src_mask over the line
cat >s2s.json <<'EOF'
{"format": "kiln/1", "name": "s2s", "dims": {"B": 2, "S": 8},
 "inputs": {"src": {"shape": ["B", "S"], "dtype": "i32"}, "src_mask": {"shape": ["B", "S"], "dtype": "i32"}},
 "layers": [{"name": "emb", "op": "embedding", "in": "src", "vocab": 262, "dim": 8},
            {"name": "enc", "op": "encoder_layer", "heads": 2, "hidden": 16, "mask": "src_mask"},
            {"name": "pooled", "op": "pool", "kind": "mean", "mask": "src_mask"}],
 "outputs": ["pooled"], "init": {"seed": 2}}
EOF
printf 'hello\nab\n' >two.txt
"$py" - "$src" <<'EOF'
import sys, numpy as np
sys.path.insert(0, sys.argv[1] + "/scripts")
import safetensors_np
src = np.full((2, 8), 256, np.int32)
m = np.zeros((2, 8), np.int32)
for i, l in enumerate([b"hello", b"ab"]):
    src[i, :len(l)] = list(l)
    m[i, :len(l)] = 1
safetensors_np.write("s2s_in.safetensors", {"src": src, "src_mask": m})
EOF
if kiln_ok "init s2s" init s2s.json -o s2s.safetensors &&
    kiln_ok "embed src" embed s2s.json --weights s2s.safetensors --input two.txt --out s2s_e.safetensors &&
    kiln_ok "run on seq2seq's layout" run s2s.json --weights s2s.safetensors --inputs s2s_in.safetensors \
        --out s2s_y.safetensors; then
    "$py" - "$src" <<'EOF' || fail "embed lays src out unlike seq2seq training"
import sys, numpy as np
sys.path.insert(0, sys.argv[1] + "/scripts")
import safetensors_np
e = safetensors_np.read("s2s_e.safetensors")["embeddings"]
y = safetensors_np.read("s2s_y.safetensors")["pooled"]
assert np.abs(e - y).max() <= 1e-6 * np.abs(y).max(), np.abs(e - y).max()
EOF
fi

# failures write nothing
kiln_fails "an output that is not pooled" 1 "is not a (batch, D) float value" embed enc.json --weights w.safetensors \
    --input lines.txt --out bad.safetensors --output blk
kiln_fails "an unknown output" 1 "has no output or layer named 'nope'" embed enc.json --weights w.safetensors \
    --input lines.txt --out bad.safetensors --output nope
kiln_fails "no --input" 2 "input FILE is required" embed enc.json --weights w.safetensors --out bad.safetensors
kiln_fails "a missing input file" 1 "nothere.txt: error: cannot open" embed enc.json --weights w.safetensors \
    --input nothere.txt --out bad.safetensors
cat >nopool.json <<'EOF'
{
  "format": "kiln/1", "name": "nopool", "dims": {"B": 2, "T": 12},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 262, "dim": 32}],
  "outputs": ["wte"]
}
EOF
kiln_fails "a model without a pooled value" 1 "no pool layer and no (batch, D) output" embed nopool.json \
    --weights w.safetensors --input lines.txt --out bad.safetensors
sed -e 's/"mask": {"shape"/"weights": {"shape"/' -e 's/"mask": "mask"/"mask": "weights"/g' enc.json >other.json
kiln_fails "an input embed cannot fill" 1 "depends on this input, but embed fills only" embed other.json \
    --weights w.safetensors --input lines.txt --out bad.safetensors
[[ -e bad.safetensors ]] && fail "a failed embed wrote its --out"
: >empty.txt
kiln_ok "an empty input" embed enc.json --weights w.safetensors --input empty.txt --out z.safetensors
"$py" - "$src" <<'EOF' || fail "an empty input gives a (0, D) tensor"
import sys
sys.path.insert(0, sys.argv[1] + "/scripts")
import safetensors_np
assert safetensors_np.read("z.safetensors")["embeddings"].shape == (0, 32)
EOF
finish
