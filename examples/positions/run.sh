#!/usr/bin/env bash
# run.sh — the positions example: one small byte-level GPT (2 pre-LN blocks, d=128,
# 4 heads, 0.43M parameters) trained five times on the fortunes, once per position
# kind — sinusoidal.json, learned.json, relative.json, rope.json, alibi.json, identical
# but for the position scheme — at T = 64, then measured on held-out fortunes at the
# training length and at twice it (T = 128: length extrapolation). Learned positions
# have a table of 64 rows, so kiln refuses T = 128 for them with a message; the table
# says so. One table (results.md) and one `kiln plot` chart of the five runs (loss.svg).
#
#   examples/positions/run.sh [--tiny] [--out DIR]
#
# --tiny (or TINY=1): a few steps on short windows, to check the recipe works (the test
# suite runs this); the figures mean nothing. DIR defaults to examples/positions/out.
# KILN=path uses that kiln binary instead of building one; THREADS=N (default 2);
# STEPS=N changes the number of steps (default 300).
set -euo pipefail
. "$(dirname "$0")/../recipe.sh" "$@" # here, root, tiny, out, kiln, py, threads
kinds="sinusoidal learned relative rope alibi"
mkdir -p "$out"

if [ "$tiny" = 1 ]; then
  steps=2 T=16 batch=2 val_every=2 limit=100000
  kinds="learned alibi" # the refusal and one relative scheme; the other files are only checked
  for kind in sinusoidal relative rope; do "$kiln" check "$here/$kind.json" >/dev/null; done
  # the learned table must cover the training length only: shrink it with the windows
  sed 's/"max_len": 64/"max_len": 16/' "$here/learned.json" >"$out/learned_tiny.json"
else
  steps=${STEPS:-300} T=64 batch=16 val_every=25 limit=0
fi
T2=$((2 * T))

echo "== data: the English fortunes, every 150th held out (as scripts/demo.sh)"
"$py" "$root/scripts/fortunes_data.py" "$out" "$limit" "$((limit / 10))"

: >"$out/evals.tsv"
for kind in $kinds; do
  model=$here/$kind.json
  [ "$tiny" = 1 ] && [ $kind = learned ] && model=$out/learned_tiny.json
  echo "== $kind: kiln train, $steps steps of $batch windows × $T bytes"
  "$kiln" train "$model" --data "$out/train.txt" --val "$out/val.txt" -D T=$T --batch $batch \
    --steps $steps --val-every $val_every --val-batches 4 --threads "$threads" \
    --save "$out/$kind.safetensors" --log "$out/$kind.jsonl" | tail -n 2
  for t in $T $T2; do
    # a refusal (learned positions past their table) is a result, not a failure of the recipe
    if "$kiln" eval "$model" --weights "$out/$kind.safetensors" --data "$out/val.txt" -D T=$t --batch 4 \
      >"$out/eval_${kind}_$t.txt" 2>&1; then
      status=ok
    else
      status=refused
    fi
    echo "   eval at T=$t: $status: $(tr '\n' ' ' <"$out/eval_${kind}_$t.txt")"
    printf '%s\t%s\t%s\n' "$kind" "$t" "$status" >>"$out/evals.tsv"
  done
done

echo "== kiln plot: the runs on one chart"
(cd "$out" && "$kiln" plot $(for k in $kinds; do echo $k.jsonl; done) -o loss.svg \
  --smooth 15 --title "one small GPT, five position kinds: $steps steps of $batch × $T bytes")

"$py" - "$out" "$T" "$T2" $kinds <<'EOF'
import json, math, re, sys
out, T, T2, kinds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def loss_of(kind, t):
    text = open(f"{out}/eval_{kind}_{t}.txt").read()
    m = re.search(r"loss\s*[:=]?\s*([0-9.]+)", text)
    if "error" in text or not m:
        return None, text.strip().splitlines()[-1]
    return float(m.group(1)), None
lines = [f"| position kind | final training loss | val loss at T={T} | val loss at T={T2} | change |",
         "|---|---:|---:|---:|---:|"]
notes = []
for kind in kinds:
    rows = [json.loads(l) for l in open(f"{out}/{kind}.jsonl")]
    last = sum(r["loss"] for r in rows[-10:]) / len(rows[-10:])
    a, _ = loss_of(kind, T)
    b, why = loss_of(kind, T2)
    if b is None:
        notes.append(f"{kind} at T={T2}: `{why}`")
    lines.append(f"| {kind} | {last:.3f} | {a:.3f} | "
                 + (f"{b:.3f} | {b - a:+.3f} |" if b is not None else "refused (see below) | – |"))
text = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
open(out + "/results.md", "w").write(text)
print(text)
EOF
echo "== results in $out/results.md, chart in $out/loss.svg"
