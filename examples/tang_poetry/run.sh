#!/usr/bin/env bash
# run.sh — the tang_poetry example: a character-level GPT (tang_gpt.json: 4 pre-LN
# blocks, d=128, rope, 1.1M parameters) trained on the Three Hundred Tang Poems of
# Debian's fortunes-zh package (/usr/share/games/fortunes/tang300, colour codes
# stripped by prepare.py), then asked for new five- and seven-character poems with
# `kiln generate`; form.py counts how many generated lines keep the 5/7-character form.
#
#   examples/tang_poetry/run.sh [--tiny] [--out DIR]
#
# --tiny (or TINY=1): a few steps on a few poems, to check the recipe works (the test
# suite runs this); the figures mean nothing. DIR defaults to examples/tang_poetry/out:
# the data, checkpoint, log, loss chart (loss.svg), samples (sample_*.txt), results.md.
# KILN=path uses that kiln binary instead of building one; THREADS=N (default 2);
# STEPS=N changes the number of steps (default 300).
set -euo pipefail
. "$(dirname "$0")/../recipe.sh" "$@" # here, root, tiny, out, kiln, py, threads
model=$here/tang_gpt.json
source_file=${TANG300:-/usr/share/games/fortunes/tang300}
if [ ! -f "$source_file" ]; then
  echo "$source_file is missing: install Debian's fortunes-zh (apt-get install fortunes-zh)" >&2
  exit 77
fi
mkdir -p "$out"

if [ "$tiny" = 1 ]; then
  steps=2 T=32 batch=2 val_every=2 limit= seeds="1" max_new=8
else
  steps=${STEPS:-300} T=128 batch=16 val_every=50 limit= seeds="1 2 3 4" max_new=100
fi

echo "== data"
"$py" "$here/prepare.py" "$source_file" "$out" $limit
"$py" "$here/form.py" "$out/train.txt" | tail -n 1

echo "== kiln train: $steps steps of $batch windows × $T characters"
"$kiln" train "$model" --data "$out/train.txt" --val "$out/val.txt" -D T=$T --batch $batch \
  --steps $steps --val-every $val_every --val-batches 4 --threads "$threads" \
  --save "$out/tang.safetensors" --log "$out/log.jsonl" | tee "$out/train.log"
"$kiln" plot "$out/log.jsonl" -o "$out/loss.svg" --smooth 9 \
  --title "tang_gpt on the Tang poems: $steps steps of $batch × $T characters"

echo "== kiln eval on the held-out poems"
"$kiln" eval "$model" --weights "$out/tang.safetensors" --data "$out/val.txt" -D T=$T --batch 4 | tee "$out/eval.txt"

# three prompts: a title and author only (the model picks the form), and the first
# clause of a five- and of a seven-character poem (titles and clauses not in the poems,
# every character in them)
free='《秋夜》
作者：'
five='《山居》
作者：王维
明月照空山，'
seven='《江上》
作者：杜甫
春风吹雨过江来，'
echo "== kiln generate: temperature 0.8, top-k 20, seeds $seeds"
for kind in free five seven; do
  for seed in $seeds; do
    "$kiln" generate "$model" --weights "$out/tang.safetensors" -D T=$T --prompt "${!kind}" \
      --max-new $max_new --temperature 0.8 --top-k 20 --seed $seed --threads "$threads" \
      >"$out/sample_${kind}_$seed.txt"
  done
done

"$py" - "$out" "$here/form.py" "$steps" "$T" "$batch" $seeds <<'EOF'
import glob, json, math, re, subprocess, sys
out, form, steps, T, batch, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
def form_of(paths):
    r = subprocess.run([sys.executable, form, "--json"] + paths, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)
rows = [json.loads(l) for l in open(out + "/log.jsonl")]
val = float(re.search(r"loss\s*([0-9.]+)", open(out + "/eval.txt").read()).group(1))
lines = ["| figure | value |", "|---|---:|",
         f"| training | {steps} steps × {batch} windows × {T} characters |",
         f"| training loss (mean of the last 10 steps) | {sum(r['loss'] for r in rows[-10:]) / len(rows[-10:]):.3f} |",
         f"| validation loss (`kiln eval`, 16 held-out poems) | {val:.3f} (perplexity {math.exp(val):.1f}) |",
         f"| wall time of training | {rows[-1].get('elapsed_s', float('nan')):.0f} s |"]
train_form = form_of([out + "/train.txt"])
lines.append(f"| training poems: lines keeping the 5/7 form | {100 * train_form['share']:.1f}% of {train_form['lines']} |")
for kind, what in (("free", "title and author only"), ("five", "first five-character clause"),
                   ("seven", "first seven-character clause")):
    f = form_of(sorted(glob.glob(f"{out}/sample_{kind}_*.txt")))
    lines.append(f"| generated, prompt = {what}: lines keeping the form | {100 * f['share']:.1f}% of {f['lines']} "
                 f"({f['five']} five, {f['seven']} seven) |")
f = form_of(sorted(glob.glob(f"{out}/sample_*.txt")))
lines.append(f"| generated, all samples | {100 * f['share']:.1f}% of {f['lines']} |")
lines.append("")
for kind in ("free", "five", "seven"):
    for seed in seeds:
        lines += [f"prompt {kind}, seed {seed}:", "```", open(f"{out}/sample_{kind}_{seed}.txt").read().rstrip("\n"), "```"]
open(out + "/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "== results in $out/results.md, loss chart in $out/loss.svg"
