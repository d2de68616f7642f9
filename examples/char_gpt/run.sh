#!/usr/bin/env bash
# run.sh — the char_gpt example: train examples/char_gpt.json (6 layers, d=384, 10.8M
# parameters, byte-level) on the quotations of Debian's `fortunes` package with the
# budget of scripts/demo.sh (160 steps of 8 windows × 64 bytes), then measure it on the
# fortunes it held out (loss and bits per byte) and let it write (kiln generate) at two
# temperatures.
#
#   examples/char_gpt/run.sh [--tiny] [--out DIR]
#
# --tiny (or TINY=1): a few steps on short windows, to check the recipe works (the test
# suite runs this); the figures mean nothing. DIR (default examples/char_gpt/out) gets the
# data split, the checkpoint, the metrics log, the loss chart (loss.svg) and results.md.
# KILN=path uses that kiln binary instead of building one; THREADS=N (default 2).
set -euo pipefail
. "$(dirname "$0")/../recipe.sh" "$@" # here, root, tiny, out, kiln, py, threads
model=$root/examples/char_gpt.json
mkdir -p "$out"

if [ "$tiny" = 1 ]; then
  steps=3 T=16 batch=2 val_every=3 val_batches=1 max_new=8 limit=100000 seeds=1
else
  steps=160 T=64 batch=8 val_every=50 val_batches=8 max_new=$((64 - 6)) limit=0 seeds="1 2 3"
fi

echo "== data: the English fortunes, every 150th held out (as scripts/demo.sh)"
"$py" "$root/scripts/fortunes_data.py" "$out" "$limit" "$((limit / 50))"

echo "== kiln train: $steps steps of $batch windows × $T bytes, $threads threads"
"$kiln" train "$model" --data "$out/train.txt" --val "$out/val.txt" -D T=$T --batch $batch \
  --steps $steps --val-every $val_every --val-batches $val_batches --threads "$threads" \
  --save "$out/gpt.safetensors" --log "$out/log.jsonl" | tee "$out/train.log"

"$kiln" plot "$out/log.jsonl" -o "$out/loss.svg" --smooth 9 \
  --title "char_gpt on fortunes: $steps steps of $batch × $T bytes"

echo "== kiln eval on the held-out fortunes"
"$kiln" eval "$model" --weights "$out/gpt.safetensors" --data "$out/val.txt" -D T=$T --batch $batch \
  | tee "$out/eval.txt"

echo "== kiln generate: seeds $seeds at temperature 0.6 and at 1.0 (context $T bytes)"
for temp in 0.6 1.0; do
  for seed in $seeds; do
    "$kiln" generate "$model" --weights "$out/gpt.safetensors" -D T=$T --prompt "%
The " \
      --max-new $max_new --temperature $temp --seed $seed --threads "$threads" --json >"$out/gen_${temp}_$seed.json"
  done
done

"$py" - "$out" "$steps" "$T" "$batch" <<'EOF'
import glob, json, math, re, sys
out, steps, T, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(line) for line in open(out + "/log.jsonl")]
ev = open(out + "/eval.txt").read()
m = re.search(r"loss\s*[:=]?\s*([0-9.]+)", ev)
val = float(m.group(1))
lines = ["| figure | value |", "|---|---:|",
         f"| training | {steps} steps × {batch} windows × {T} bytes |",
         f"| training loss (mean of the last 10 steps) | {sum(r['loss'] for r in rows[-10:]) / len(rows[-10:]):.3f} |",
         f"| validation loss (`kiln eval`, held-out fortunes, nats per byte) | {val:.3f} |",
         f"| bits per byte (loss / ln 2) | {val / math.log(2):.3f} |",
         f"| perplexity (e^loss) | {math.exp(val):.2f} |",
         f"| wall time of training | {rows[-1].get('elapsed_s', float('nan')):.0f} s |", ""]
for temp in ("0.6", "1.0"):
    for path in sorted(glob.glob(f"{out}/gen_{temp}_*.json")):
        g = json.loads(open(path).read())
        seed = path.rsplit("_", 1)[1][:-5]
        lp = sum(g["logprobs"]) / max(1, len(g["logprobs"]))
        lines.append(f"temperature {temp}, seed {seed} (mean log-prob {lp:.2f}):")
        lines.append("```")
        lines.append(g["prompt"] + g["text"])
        lines.append("```")
open(out + "/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "== results in $out/results.md, loss chart in $out/loss.svg"
