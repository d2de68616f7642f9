#!/usr/bin/env bash
# test_generate.sh KILN SRCDIR — `kiln generate` end to end (docs/generation.md):
# for a small decoder with each position kind (sinusoidal, learned, relative, rope, alibi),
# greedy decoding with the KV cache equals greedy decoding that re-runs the full forward
# pass over the growing sequence (--no-cache), token for token, with log-probabilities
# within float tolerance; a fixed seed reproduces the same text and --top-k 1 is greedy
# (--greedy with --temperature 0, --top-k 0 and --top-p 1 too, with a sampling setting it is refused);
# the context bounds generation (stop "context"), a too long prompt is refused or
# truncated from the left; an encoder-decoder (--source) agrees with its full forward
# pass too; the sampler keeps top-k ties as HF does, is greedy at a tiny temperature and
# refuses a NaN logit; and every bad request fails with its message: an encoder model, --top-p outside (0, 1], a negative temperature, a character missing from a char
# vocabulary, a char model without its tokenizer. Then `kiln compile --generate` exports
# NAME_prefill and NAME_decode_step, and examples/deploy/generate.c built against the .so
# and the .a prints exactly what `kiln generate` prints, greedy and with top-k sampling;
# for an encoder-decoder (examples/translator.json, its prefill also taking the source),
# examples/deploy/translate.c prints what `kiln generate --source` prints.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
models=$src/tests/cli/generate

# --- the KV cache against the full forward pass, every position kind ---
kinds="sinusoidal learned relative rope alibi"
exported="10|60 0.9 20 7|60 1.3 0 11"   # the generate.c runs below: greedy, top-k, full softmax
# The sanitizer build looks for memory errors in kiln's C code, and every run here is
# mostly LLVM compiling and generated code, neither of which ASan instruments: it runs
# one position kind (rope, in the attention kernel, what the sampling checks use) and one
# generate.c comparison (top-k sampling); the plain build runs all of them (CI time,
# docs/testing.md)
if readelf -d "$kiln" 2>/dev/null | grep -q libasan; then kinds="rope"; exported="60 0.9 20 7"; fi
for kind in $kinds; do
    model=$models/gen_$kind.json
    kiln_ok "init $kind" init "$model" -o w_$kind.safetensors --seed 3 || continue
    kiln_ok "greedy $kind" generate "$model" --weights w_$kind.safetensors --prompt "The cat" --max-new 40 \
        --greedy --json --threads 2 && cp out.txt cached.json
    kiln_ok "greedy --no-cache $kind" generate "$model" --weights w_$kind.safetensors --prompt "The cat" \
        --max-new 40 --temperature 0 --json --no-cache && cp out.txt full.json
    if ! $py - cached.json full.json <<'EOF'; then fail "$kind: the KV cache disagrees with the full forward pass"; fi
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
assert a["ids"] == b["ids"], (a["ids"], b["ids"])
# the prompt is 7 tokens, the context 32: 25 new tokens, then the context is full
assert len(a["ids"]) == 26 and a["stop"] == "context", (len(a["ids"]), a["stop"])
worst = max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"]))
assert worst < 1e-4, worst
assert all(lp <= 0 for lp in a["logprobs"])
assert a["prompt"] == "The cat" and a["prompt_tokens"] == 7
EOF
done

# --- sampling: a seed reproduces, --top-k 1 is greedy ---
model=$models/gen_rope.json
w=w_rope.safetensors
kiln_ok "seed 5" generate "$model" --weights $w --prompt "Once" --max-new 20 --seed 5 --top-p 0.9 && cp out.txt s5a.txt
kiln_ok "seed 5 again" generate "$model" --weights $w --prompt "Once" --max-new 20 --seed 5 --top-p 0.9 && cp out.txt s5b.txt
cmp -s s5a.txt s5b.txt || fail "the same seed gave different text"
kiln_ok "seed 6" generate "$model" --weights $w --prompt "Once" --max-new 20 --seed 6 --top-p 0.9 --json && cp out.txt s6.json
kiln_ok "seed 7" generate "$model" --weights $w --prompt "Once" --max-new 20 --seed 7 --top-p 0.9 --json && cp out.txt s7.json
cmp -s s6.json s7.json && fail "seeds 6 and 7 gave the same text (the seed is ignored?)"
kiln_ok "top-k 1" generate "$model" --weights $w --prompt "Once" --max-new 10 --top-k 1 --temperature 1.5 --json &&
    cp out.txt k1.json
kiln_ok "greedy" generate "$model" --weights $w --prompt "Once" --max-new 10 --greedy --json && cp out.txt g.json
$py -c 'import json,sys; a,b=(json.load(open(f))["ids"] for f in sys.argv[1:]); assert a==b' k1.json g.json ||
    fail "--top-k 1 differs from greedy"
kiln_ok "greedy with the settings that agree" generate "$model" --weights $w --prompt "Once" --max-new 10 --greedy \
    --temperature 0 --top-k 0 --top-p 1 --json && cp out.txt g0.json
$py -c 'import json,sys; a,b=(json.load(open(f))["ids"] for f in sys.argv[1:]); assert a==b' g0.json g.json ||
    fail "--greedy --temperature 0 --top-k 0 --top-p 1 differs from --greedy"
kiln_fails "greedy and a sampling temperature" 2 "conflicts with --temperature 0.8" generate "$model" --weights $w \
    --prompt "Once" --greedy --temperature 0.8
kiln_ok "plain text output" generate "$model" --weights $w --prompt "Once" --max-new 3 --greedy
head -c 4 out.txt | grep -q "^Once" || fail "the plain output does not start with the prompt"
kiln_ok "max-new 0" generate "$model" --weights $w --prompt "Once" --max-new 0 --json
$py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ids"]==[] and d["stop"]=="max_new"' out.txt ||
    fail "--max-new 0 generated something"

# --- the context ---
long=$(printf 'abcdefghij%.0s' 1 2 3 4)  # 40 bytes, context 32
kiln_fails "prompt over the context" 1 "longer than the model's context of 32" generate "$model" --weights $w \
    --prompt "$long" --max-new 2
kiln_ok "--truncate" generate "$model" --weights $w --prompt "$long" --max-new 5 --truncate --json
$py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["prompt_tokens"]==32 and len(d["ids"])==1 and d["stop"]=="context" and d["prompt"]==sys.argv[2][-32:], d' \
    out.txt "$long" || fail "--truncate did not keep the last 32 tokens"

kiln_ok "a huge --max-new" generate "$model" --weights $w --prompt "Once" --max-new 9223372036854775807 --json
$py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["stop"]=="context" and len(d["ids"])==29' out.txt ||
    fail "a huge --max-new did not stop at the context"

# --- bad requests ---
kiln_fails "top-p 0" 2 "expected a value in (0, 1]" generate "$model" --weights $w --prompt a --top-p 0
kiln_fails "top-p 1.5" 2 "expected a value in (0, 1]" generate "$model" --weights $w --prompt a --top-p 1.5
kiln_fails "negative temperature" 2 "temperature" generate "$model" --weights $w --prompt a --temperature -0.5
kiln_fails "no prompt" 2 "--prompt TEXT is required" generate "$model" --weights $w
kiln_fails "empty prompt" 1 "is empty" generate "$model" --weights $w --prompt ""
kiln_fails "encoder model" 1 "not causal" generate "$src/examples/bert_classifier.json" --weights $w --prompt a
kiln_fails "--source on a decoder" 1 "has no 'src' input" generate "$model" --weights $w --source a

# an encoder-decoder: the encoder runs in the prefill, cross-attention keys and values are
# cached with the decoder's own; the same check against the full forward pass
s2s=$models/gen_seq2seq.json
if kiln_ok "init seq2seq" init "$s2s" -o s2s.safetensors; then
    kiln_ok "seq2seq cached" generate "$s2s" --weights s2s.safetensors --source "hello there" --max-new 30 --greedy \
        --json && cp out.txt cached.json
    kiln_ok "seq2seq --no-cache" generate "$s2s" --weights s2s.safetensors --source "hello there" --max-new 30 \
        --greedy --json --no-cache && cp out.txt full.json
    kiln_ok "seq2seq other source" generate "$s2s" --weights s2s.safetensors --source "goodbye" --max-new 30 \
        --greedy --json && cp out.txt other.json
    $py - cached.json full.json other.json <<'EOF' || fail "seq2seq: the KV cache disagrees with the full forward pass"
import json, sys
a, b, c = (json.load(open(f)) for f in sys.argv[1:4])
assert a["ids"] == b["ids"], (a["ids"], b["ids"])
assert max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"])) < 1e-4
assert a["prompt_tokens"] == 1 and len(a["ids"]) == 24 and a["stop"] == "context"  # <bos>, then T = 24
assert a["ids"] != c["ids"], "the source changes nothing"
EOF
    kiln_fails "seq2seq without --source" 1 "give the text to transform with --source" generate "$s2s" \
        --weights s2s.safetensors --prompt a
    kiln_fails "seq2seq source too long" 1 "longer than the model's source length of 16" generate "$s2s" \
        --weights s2s.safetensors --source "$long"
fi

# a char model: its tokenizer comes from the checkpoint of kiln train
sed -e 's/"gen_rope"/"gen_char"/' -e 's/"vocab": 256/"vocab": 64/' -e 's/"out": 256/"out": 64/' \
    -e 's/"kind": "byte"/"kind": "char"/' "$model" >char.json
for i in $(seq 20); do echo "the quick brown fox jumps over the lazy dog"; done >text.txt
kiln_ok "train char" train char.json --data text.txt --steps 1 --batch 2 --save ck.safetensors
kiln_ok "char generate" generate char.json --weights ck.safetensors --prompt "the lazy" --max-new 4 --seed 1
kiln_fails "unknown char" 1 "'Q' (byte 4) is not in the model's char vocabulary" generate char.json \
    --weights ck.safetensors --prompt "the Quick" --max-new 4
kiln_ok "init char" init char.json -o char_init.safetensors
kiln_fails "missing tokenizer" 1 "has no tokenizer in its metadata" generate char.json --weights char_init.safetensors \
    --prompt "the" --max-new 4

# --- kiln compile --generate: examples/deploy/generate.c prints what kiln generate prints ---
# examples/char_gpt.json's architecture, narrower and shallower under the same name (the
# example includes char_gpt.h): the same kernels at a third of the CPU time (CI time)
gpt=char_gpt.json
sed -e 's/"dim": 384/"dim": 48/' -e 's/"hidden": 1536/"hidden": 192/' -e 's/"repeat": 6/"repeat": 2/' \
    "$src/examples/char_gpt.json" >$gpt
grep -q '"dim": 48' $gpt && grep -q '"repeat": 2' $gpt || fail "examples/char_gpt.json changed: the shrinking sed no longer applies"
cc=${CC:-cc}
kiln_ok "init char_gpt" init "$gpt" -o gpt.safetensors --seed 4
if kiln_ok "compile --generate" compile "$gpt" -D T=32 -o libchar_gpt.so --header char_gpt.h --generate &&
    kiln_ok "compile --generate .a" compile "$gpt" -D T=32 -o libchar_gpt.a --generate; then
    for sym in prefill decode_step; do
        nm -D --defined-only libchar_gpt.so | grep -q " T char_gpt_$sym\$" || fail "libchar_gpt.so lacks char_gpt_$sym"
    done
    for def in CONTEXT VOCAB KV_CACHE_BYTES GEN_WORKSPACE_BYTES; do
        grep -q "^#define CHAR_GPT_$def " char_gpt.h || fail "the header lacks CHAR_GPT_$def"
    done
    grep -q "^#define CHAR_GPT_CONTEXT 32$" char_gpt.h || fail "the header's context is not 32"
    if "$cc" -std=c17 -O2 -Wall -Werror -I. "$src/examples/deploy/generate.c" -L. -lchar_gpt -Wl,-rpath,"$work" -lm \
        -o gen_so 2>cc.txt && "$cc" -std=c17 -O2 -I. "$src/examples/deploy/generate.c" libchar_gpt.a -lm -lpthread \
        -o gen_a 2>>cc.txt; then
        IFS='|' read -r -a runs <<<"$exported"
        for args in "${runs[@]}"; do
            set -- $args
            if [[ $# -eq 1 ]]; then sampling=(--greedy); else sampling=(--temperature "$2" --top-k "$3" --seed "$4"); fi
            kiln_ok "kiln generate $args" generate "$gpt" -D T=32 --weights gpt.safetensors --prompt "Hello" \
                --max-new "$1" "${sampling[@]}" && cp out.txt want.txt
            ./gen_so gpt.safetensors "Hello" $args >got.txt 2>err.txt || fail "generate.c ($args) failed: $(cat err.txt)"
            cmp -s want.txt got.txt || fail "generate.c ($args, .so) differs from kiln generate"
            ./gen_a gpt.safetensors "Hello" $args >got.txt 2>err.txt || fail "generate.c ($args, .a) failed"
            cmp -s want.txt got.txt || fail "generate.c ($args, .a) differs from kiln generate"
        done
    else
        fail "examples/deploy/generate.c does not build: $(head -n 5 cc.txt)"
    fi
fi
kiln_fails "--generate with --emit" 2 "applies to a library" compile "$gpt" --emit llvm --generate

# --- an encoder-decoder exported: examples/deploy/translate.c prints what kiln generate prints ---
# examples/translator.json, likewise narrower and shallower (still 2 encoder and 2 decoder layers)
tr=translator.json
sed -e 's/"dim": 256/"dim": 32/g' -e 's/"hidden": 1024/"hidden": 64/g' -e 's/"repeat": 3/"repeat": 2/g' \
    "$src/examples/translator.json" >$tr
grep -q '"dim": 32' $tr && ! grep -q '"repeat": 3' $tr || fail "examples/translator.json changed: the shrinking sed no longer applies"
trdims=(-D S=12 -D T=16)
if kiln_ok "init translator" init "$tr" "${trdims[@]}" -o tr.safetensors --seed 3 &&
    kiln_ok "compile --generate translator" compile "$tr" "${trdims[@]}" -o libtranslator.so --header translator.h \
        --generate; then
    grep -q "^#define TRANSLATOR_SOURCE_LEN 12$" translator.h || fail "the header's source length is not 12"
    if "$cc" -std=c17 -O2 -Wall -Werror -I. "$src/examples/deploy/translate.c" -L. -ltranslator \
        -Wl,-rpath,"$work" -o translate 2>cc.txt; then
        for args in "a longer one|40|Ab"; do
            IFS='|' read -r source max prompt <<<"$args"
            kiln_ok "kiln generate --source '$source'" generate "$tr" "${trdims[@]}" --weights tr.safetensors \
                --source "$source" --prompt "$prompt" --max-new "$max" --greedy && cp out.txt want.txt
            ./translate tr.safetensors "$source" "$max" "$prompt" >got.txt 2>err.txt ||
                fail "translate.c ('$source') failed: $(cat err.txt)"
            cmp -s want.txt got.txt || fail "translate.c ('$source') differs from kiln generate: $(cat got.txt)"
        done
    else
        fail "examples/deploy/translate.c does not build: $(head -n 5 cc.txt)"
    fi
fi

# --- a model with neither attention nor positions (a bigram model): no cache, no position ---
cat >bigram.json <<'EOF'
{"format": "kiln/1", "name": "bigram", "dims": {"B": 2, "T": 16},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}, "targets": {"shape": ["B", "T"], "dtype": "i32"}},
 "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 8},
            {"name": "logits", "op": "linear", "out": 256}],
 "outputs": ["logits"], "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
 "train": {"optimizer": "adamw", "lr": 0.01}}
EOF
if kiln_ok "train bigram" train bigram.json --data text.txt --steps 5 --save bigram.safetensors &&
    kiln_ok "bigram, cached" generate bigram.json --weights bigram.safetensors --prompt "the " --max-new 8 --greedy; then
    cp out.txt want.txt
    kiln_ok "bigram, --no-cache" generate bigram.json --weights bigram.safetensors --prompt "the " --max-new 8 --greedy \
        --no-cache && { cmp -s want.txt out.txt || fail "bigram: the decode step differs from --no-cache"; }
fi

# --- the sampler against HF's warpers, on logits a bigram model fixes: every row of its
# embedding is the next token's logits (the rest of the 256 ids at -1e4) ---
designed() { # designed NAME ROW — NAME.json and NAME.safetensors whose logits are ROW (a Python list)
    "$py" - "$src/scripts" "$1" "$2" <<'EOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np, safetensors_np
name, row = sys.argv[2], json.loads(sys.argv[3].replace("nan", "NaN"))
json.dump({"format": "kiln/1", "name": "designed", "dims": {"B": 1, "T": 1024},
           "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
           "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 256},
                      {"name": "logits", "op": "scale", "by": 1.0}],
           "outputs": ["logits"], "tokenizer": {"kind": "byte"}}, open(name + ".json", "w"))
w = np.full((256, 256), -1e4, np.float32)
w[:, :len(row)] = row
safetensors_np.write(name + ".safetensors", {"wte.weight": w})
EOF
}
# top-k keeps every id tied with the K-th, as HF's TopKLogitsWarper: [3, 2, 2, 1] with top-k 2
# gives ids 0, 1, 2 with probabilities 0.576, 0.212, 0.212 (kiln once never drew id 2)
designed ties "[3, 2, 2, 1]"
if kiln_ok "top-k 2 over a tie" generate ties.json --weights ties.safetensors --prompt A --max-new 1000 \
    --top-k 2 --seed 4 --json; then
    "$py" -c "
import json, sys
ids = json.load(open('out.txt'))['ids']
f = [ids.count(i) / len(ids) for i in range(4)]
assert len(ids) == 1000 and abs(f[0] - 0.576) < 0.05 and 0.16 < f[1] < 0.27 and 0.16 < f[2] < 0.27 and f[3] == 0, f
" || fail "top-k 2 over tied logits does not sample as HF's TopKLogitsWarper (above)"
fi
# a temperature near the smallest double is greedy (logits/T once overflowed to the least likely id)
designed sharp "[1, 2, 50, 3, 0.5]"
kiln_ok "--temperature 1e-307" generate sharp.json --weights sharp.safetensors --prompt A --max-new 5 \
    --temperature 1e-307 --top-k 3 --json &&
    { "$py" -c "import json; assert json.load(open('out.txt'))['ids'] == [2] * 5" ||
        fail "--temperature 1e-307 is not greedy: $(cat out.txt)"; }
# a NaN logit has no distribution: an error naming it, not an arbitrary token or nan in --json
designed nanrow "[1, nan, 3]"
kiln_fails "a NaN logit" 1 "logits of generated token 1 are not finite (nan at id 1)" generate nanrow.json \
    --weights nanrow.safetensors --prompt A --max-new 3 --json --temperature 0.7

# models generation cannot run, refused with what is wrong (once "internal error"): a token
# shift (a slice along the positions outside attention), and a position table written as a
# `param` of shape ["T", "D"] (one shape over the context, another in the decode step)
cp nanrow.safetensors unused.safetensors
cat >shift.json <<'EOF'
{"format": "kiln/1", "name": "shift", "dims": {"B": 1, "T": 24},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
 "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
            {"name": "prev", "op": "slice", "in": "wte", "axis": 1, "start": 0, "end": -1},
            {"name": "pad", "op": "constant", "shape": [1, 1, 16], "value": 0.0},
            {"name": "shifted", "op": "concat", "in": ["pad", "prev"], "axis": 1},
            {"name": "logits", "op": "linear", "out": 256}],
 "outputs": ["logits"], "tokenizer": {"kind": "byte"}}
EOF
kiln_fails "a token shift" 1 "layers\[1\]: error: prev mixes the token positions outside attention (slice)" \
    generate shift.json --weights unused.safetensors --prompt ab --no-cache
cat >parampos.json <<'EOF'
{"format": "kiln/1", "name": "parampos", "dims": {"B": 1, "T": 24, "D": 16},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
 "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
            {"name": "pos", "op": "param", "shape": ["T", "D"]},
            {"name": "x", "op": "add", "in": ["wte", "pos"]},
            {"name": "logits", "op": "linear", "out": 256}],
 "outputs": ["logits"], "tokenizer": {"kind": "byte"}}
EOF
kiln_fails "a param over T" 1 "parameter 'pos' is f32\[24,16\] over the whole context but f32\[1,16\] in the decode step" \
    generate parampos.json --weights unused.safetensors --prompt ab

finish
