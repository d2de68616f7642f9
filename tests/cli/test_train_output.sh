#!/usr/bin/env bash
# test_train_output.sh KILN SRCDIR — what `kiln train` tells a user off a terminal:
#   - a plain progress line after the first step, every --log-every steps and on the
#     last (default: a tenth of the run), carrying val_loss on validation steps, and no
#     separate validation line for those steps;
#   - a warning without --save, none with it;
#   - a warning when the model's warmup_steps exceeds the run's steps;
#   - a bad --log-every is refused.
# (Ctrl-C reported as an interruption, status 130: test_train.sh.)
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

model() { # model WARMUP
    cat <<JSON
{
  "format": "kiln/1", "name": "tiny",
  "dims": {"B": 4, "T": 16},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
    {"name": "ln_f", "op": "layernorm"},
    {"name": "logits", "op": "linear", "out": 256}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 1e-2, "warmup_steps": $1, "schedule": "cosine"}
}
JSON
}
model 2 >tiny.json
model 50 >warm.json
"$py" -c "open('text.txt', 'w').write('the quick brown fox jumps over the lazy dog ' * 60)"

# ---- 20 steps, --log-every 5, validation every 10, no --save -----------------------------------
status=0
"$kiln" train tiny.json --data text.txt --val text.txt --val-every 10 --val-batches 1 --steps 20 --log-every 5 \
    >out.txt 2>err.txt || status=$?
[[ $status -eq 0 ]] || fail "train: exit $status — $(cat err.txt)"
steps=$(grep -oE '^step [0-9]+/20 ' out.txt | awk '{print $2}' | tr '\n' ' ')
[[ "$steps" == "1/20 5/20 10/20 15/20 20/20 " ]] || fail "progress lines at steps '$steps', want 1 5 10 15 20: $(cat out.txt)"
grep -Eq '^step 10/20  loss [0-9.]+  lr [0-9.e+-]+  .* tok/s  elapsed [0-9]+s  ETA [0-9]+s  val_loss [0-9.]+$' out.txt ||
    fail "the line of a validation step: $(grep '^step 10/' out.txt)"
grep -q '^step 5/20 .*val_loss' out.txt && fail "val_loss on a step without validation: $(cat out.txt)"
grep -q '^step 10: ' out.txt && fail "a separate validation line where the progress line has it: $(cat out.txt)"
grep -q "warning: no --save: the trained weights will not be kept" err.txt || fail "no warning without --save: $(cat err.txt)"
grep -q "warmup" err.txt && fail "a warmup warning for warmup 2 of 20 steps: $(cat err.txt)"

# ---- the default interval: a tenth of the run; with --save no warning -------------------------
"$kiln" train tiny.json --data text.txt --steps 30 --save w.safetensors >out.txt 2>err.txt || fail "train 30: $(cat err.txt)"
n=$(grep -cE '^step [0-9]+/30 ' out.txt || true)
[[ $n -eq 11 ]] || fail "default --log-every: $n progress lines for 30 steps, want 11 (1, 3, 6, …, 30): $(cat out.txt)"
grep -q "warning" err.txt && fail "a warning with --save: $(cat err.txt)"

# ---- warmup longer than the run -----------------------------------------------------------------
"$kiln" train warm.json --data text.txt --steps 10 --save w.safetensors >out.txt 2>err.txt || fail "train warm: $(cat err.txt)"
grep -q "warning: the model's warmup_steps (50) exceeds the run's steps (10): the learning rate never reaches its peak 0.01 (it ends at 0.002)" err.txt ||
    fail "no warmup warning: $(cat err.txt)"

# ---- misuse ------------------------------------------------------------------------------------
status=0
"$kiln" train tiny.json --data text.txt --steps 10 --log-every -1 >out.txt 2>err.txt || status=$?
[[ $status -ne 0 ]] && grep -q -- "--log-every: error: expected 0 or more" err.txt ||
    fail "--log-every -1: exit $status, $(cat err.txt)"

finish "kiln train output: all checks passed"
