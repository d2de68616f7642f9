#!/usr/bin/env bash
# demo.sh — kiln's main job: train the GPT-style example (examples/char_gpt.json, 6
# layers, 10.8M parameters, byte-level) on English text — the quotations of Debian's
# `fortunes` package — for a few minutes, then measure it on text it has not seen.
#
# Builds kiln first (installing what is missing). The model file is used as it is; only
# the sizes change on the command line (-D T=64: 64-byte windows, --batch 8), so one
# step takes 0.7–1.4 s on this 2-core machine (one core computes; more when it is busy)
# and 160 steps take 2–4 minutes. STEPS=N changes the length. Watch the progress
# bar (on a terminal) and the validation lines: the loss starts at ln 256 ≈ 5.5 (a
# uniform guess over bytes) and falls as the model learns English spelling. The loss
# curve is drawn by `kiln plot` into demo_loss.svg (PLOT=path changes where); open it in
# a browser.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kiln=${KILN:-$("$root/scripts/build.sh" "$root/build" | tail -n 1)} # KILN=path skips the build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=$root/examples/char_gpt.json
steps=${STEPS:-160}
plot=${PLOT:-demo_loss.svg}

echo "== data: the English fortunes (/usr/share/games/fortunes: the text files, not the ASCII art)"
# every 150th fortune (about 16 KiB) is held out for validation and the final evaluation
/usr/bin/python3 "$root/scripts/fortunes_data.py" "$work"

echo "== kiln train: $steps steps of 8 windows × 64 bytes"
"$kiln" train "$model" --data "$work/train.txt" --val "$work/val.txt" -D T=64 --batch 8 \
  --steps "$steps" --val-every 50 --val-batches 8 --save "$work/gpt.safetensors" --log "$work/log.jsonl"

echo "== the loss curve (training loss averaged over 20 steps)"
/usr/bin/python3 - "$work/log.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for i in range(0, len(rows), 20):
    chunk = rows[i:i + 20]
    mean = sum(r["loss"] for r in chunk) / len(chunk)
    val = [r["val_loss"] for r in chunk if "val_loss" in r]
    bar = "#" * int(round(mean * 8))
    print(f"steps {chunk[0]['step']:4d}-{chunk[-1]['step']:4d}  loss {mean:6.3f} {bar}"
          + (f"   val_loss {val[-1]:.3f}" if val else ""))
EOF

echo "== kiln plot: the loss curves as an SVG chart"
"$kiln" plot "$work/log.jsonl" -o "$plot" --smooth 9 --title "char_gpt on fortunes: $steps steps of 8 × 64 bytes"

echo "== kiln eval on the held-out text"
"$kiln" eval "$model" --weights "$work/gpt.safetensors" --data "$work/val.txt" -D T=64 --batch 8
