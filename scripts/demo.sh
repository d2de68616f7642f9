#!/usr/bin/env bash
# demo.sh — kiln's main job on built-in data: builds kiln (installing what is missing),
# checks the example GPT model, creates fresh weights and runs it on a built-in prompt
# through the reference interpreter, printing the most likely next bytes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kiln=$("$root/scripts/build.sh" "$root/build" | tail -n 1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model=$root/examples/char_gpt.json

echo "== kiln check $model (B=1, T=64)"
"$kiln" check "$model" -D B=1 -D T=64 | sed -n '1,4p;/^outputs:/,$p'

echo "== kiln init: fresh weights"
"$kiln" init "$model" -o "$work/w.safetensors" --seed 1

echo "== kiln run --interp on a built-in prompt"
/usr/bin/python3 "$root/scripts/make_prompt.py" "$work/x.safetensors" 64 \
  "Kiln turns a model file into native code. It is small enough to read."
time "$kiln" run "$model" --weights "$work/w.safetensors" --inputs "$work/x.safetensors" \
  --out "$work/y.safetensors" --interp
/usr/bin/python3 "$root/scripts/show_logits.py" "$work/y.safetensors"
