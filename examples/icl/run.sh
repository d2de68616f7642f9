#!/usr/bin/env bash
# run.sh — the icl example: in-context learning made visible. episodes.py writes
# few-shot episodes of letter permutations drawn fresh for every episode
# ("c>F,a>B,c>F,h>D,…": pairs x>Y of one mapping; 32 per training episode, 9 per test
# episode); a 2-layer decoder (icl_train.json) is trained with the loss on the answers
# only; then, on mappings never used in training, score.py measures how often it
# answers pair k right after k = 0…8 demonstrations, and plot.py draws accuracy
# against k (accuracy.svg). Finally
# `kiln generate` answers hand-written few-shot prompts.
#
#   examples/icl/run.sh [--tiny] [--sweep] [--out DIR]
#
# --tiny (or TINY=1): a few steps, to check the recipe works (the test suite runs this);
# the figures mean nothing. --sweep also trains the variants the README compares (one
# or three layers instead of two, one head instead of four) and draws them on the same
# chart. DIR defaults to examples/icl/out. KILN=path uses that kiln binary
# instead of building one; THREADS=N (default 2); STEPS=N (default 2000).
set -euo pipefail
recipe_sweep=1
. "$(dirname "$0")/../recipe.sh" "$@" # here, root, tiny, out, kiln, py, threads
mkdir -p "$out"

if [ "$tiny" = 1 ]; then
  steps=3 batch=4 n_eval=16 val_every=3 n_prompts=2
else
  steps=${STEPS:-2000} batch=32 n_eval=1000 val_every=500 n_prompts=7
fi

echo "== data: $((steps * batch)) training episodes, 512 validation and $n_eval test episodes of held-out mappings"
"$py" "$here/episodes.py" tsv $((steps * batch)) 1 "$out/train.tsv" --pairs 32
"$py" "$here/episodes.py" tsv 512 2 "$out/val.tsv" --held-out
"$py" "$here/episodes.py" eval $n_eval 3 "$out/test.safetensors" "$out/test.txt"
head -n 3 "$out/train.tsv" | cut -f 1

# variant NAME KEY=VALUE... — a copy of both model files with blocks' KEY set to VALUE
variant() {
  local name=$1
  shift
  for f in icl_train icl_lm; do
    "$py" - "$here/$f.json" "$out/${f}_$name.json" "$@" <<'EOF'
import json, sys
model = json.load(open(sys.argv[1]))
for kv in sys.argv[3:]:
    key, value = kv.split("=")
    next(l for l in model["layers"] if l["name"] == "blocks")[key] = int(value)
json.dump(model, open(sys.argv[2], "w"), indent=1)
EOF
  done
}

# train_and_score NAME STEPS LABEL — train out/icl_train_NAME.json, score it on the test episodes
train_and_score() {
  local name=$1 n=$2 label=$3
  echo "== $label: kiln train, $n steps of $batch episodes, $threads threads"
  "$kiln" train "$out/icl_train_$name.json" --task seq2seq --data "$out/train.tsv" --val "$out/val.tsv" \
    --steps $n --batch $batch --val-every $val_every --val-batches 16 --threads "$threads" \
    --save "$out/$name.safetensors" --log "$out/$name.jsonl" | tail -n 2
  "$kiln" eval "$out/icl_train_$name.json" --task seq2seq --weights "$out/$name.safetensors" \
    --data "$out/val.tsv" | tee "$out/eval_$name.txt"
  "$kiln" run "$out/icl_lm_$name.json" --weights "$out/$name.safetensors" --inputs "$out/test.safetensors" \
    --out "$out/logits_$name.safetensors" -D B=$n_eval --threads "$threads"
  "$py" "$here/score.py" "$out/test.txt" "$out/logits_$name.safetensors" "$out/result_$name.json" \
    --label "$label" | tee "$out/table_$name.md"
}

variant main
train_and_score main $steps "2 layers, 4 heads, $steps steps"
results=("$out/result_main.json")
if [ "$sweep" = 1 ]; then
  variant layer1 repeat=1
  train_and_score layer1 $steps "1 layer, 4 heads, $steps steps"
  variant head1 heads=1
  train_and_score head1 $steps "2 layers, 1 head, $steps steps"
  variant layer3 repeat=3
  train_and_score layer3 $steps "3 layers, 4 heads, $steps steps"
  results+=("$out/result_layer1.json" "$out/result_head1.json" "$out/result_layer3.json")
fi
"$py" "$here/plot.py" "$out/accuracy.svg" "${results[@]}" \
  --title "in-context learning: accuracy after k demonstrations (held-out mappings)"

echo "== kiln generate: hand-written few-shot prompts, greedy"
: >"$out/generate.txt"
while read -r prompt; do
  "$kiln" generate "$out/icl_lm_main.json" --weights "$out/main.safetensors" --prompt "$prompt" \
    --max-new 1 --greedy --json --threads "$threads" >"$out/gen.json"
  "$py" - "$out/gen.json" >>"$out/generate.txt" <<'EOF'
import json, math, sys
g = json.load(open(sys.argv[1]))
pairs = g["prompt"].split(",")
query, shown = pairs[-1][0], {p[0]: p[2] for p in pairs[:-1]}
if query in shown:
    right = shown[query]
else:
    left = sorted(set("ABCDEFGH") - set(shown.values()))
    right = left[0] if len(left) == 1 else "one of " + "".join(left)
print(f"| `{g['prompt']}` | {len(pairs) - 1} | {right} | {g['text']} | {math.exp(g['logprobs'][0]):.2f} |")
EOF
done < <(head -n $n_prompts <<'EOF'
d>
b>E,d>
b>E,a>H,d>A,f>C,b>E,d>
c>G,e>B,h>D,c>
c>G,e>B,h>D,a>F,g>A,b>H,c>
f>D,f>D,a>C,g>E,f>
a>H,b>G,c>F,d>E,e>D,f>C,g>B,h>
EOF
)
cat "$out/generate.txt"

"$py" - "$out" "${results[@]}" <<'EOF'
import json, sys
out, results = sys.argv[1], sys.argv[2:]
lines = []
for path in results:
    name = path.rsplit("result_", 1)[1][:-5]
    lines.append(open(f"{out}/table_{name}.md").read().rstrip("\n"))
    lines.append("answer loss on validation episodes (`kiln eval`): "
                 + open(f"{out}/eval_{name}.txt").read().split("loss")[1].split()[0])
    lines.append("")
lines += ["kiln generate (greedy), hand-written prompts:", "",
          "| prompt | shots | right answer | kiln's answer | its probability |", "|---|---:|---|---|---:|", open(out + "/generate.txt").read().rstrip("\n")]
open(out + "/results.md", "w").write("\n".join(lines) + "\n")
EOF
echo "== results in $out/results.md, chart in $out/accuracy.svg"
