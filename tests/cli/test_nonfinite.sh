#!/usr/bin/env bash
# test_nonfinite.sh KILN SRCDIR — numerical faults in `kiln train` (driver/nonfinite.c):
#   - a model that blows up (SGD with lr 1e18: step 1 makes the weights huge, step 2's
#     loss and gradients are NaN) stops at step 2 with an error naming the step and the
#     first non-finite gradient; the checkpoint keeps step 1 with finite parameters;
#   - --on-nonfinite skip goes on: every later step is skipped and changes nothing (the
#     final checkpoint's tensors are bit-identical to step 1's, optimizer step counter
#     included), each skip is a --log line with "skipped", the summary counts them;
#   - --on-nonfinite off (no check compiled) still stops on a NaN loss, saying the step
#     was applied;
#   - a bad --on-nonfinite value is a usage error.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

"$py" -c "
import random; random.seed(1)
w='the quick brown fox jumps over a lazy dog'.split()
open('text.txt','w').write(' '.join(random.choice(w) for _ in range(3000)))"
cat >blow.json <<'EOF'
{
  "format": "kiln/1", "name": "blow",
  "dims": {"B": 4, "T": 16},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
    {"name": "h", "op": "linear", "out": 32},
    {"name": "logits", "op": "linear", "out": 256}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "sgd", "lr": 1e18, "steps": 6}
}
EOF

# safetensors FILE → "step=N finite=BOOL" and a digest of every tensor's bytes
cat >inspect.py <<'EOF'
import hashlib, json, struct, sys, array, math
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
h = json.loads(data[8:8 + n])
body = data[8 + n:]
meta = h.pop("__metadata__", {})
finite, digest = True, hashlib.sha256()
for name in sorted(h):
    a, b = h[name]["data_offsets"]
    digest.update(name.encode() + body[a:b])
    finite &= all(math.isfinite(v) for v in array.array("f", body[a:b]))
print(f"step={meta.get('step')} finite={finite} digest={digest.hexdigest()[:16]}")
EOF

# ---- stop (the default) -------------------------------------------------------------------------
status=0
"$kiln" train blow.json --data text.txt --save stop.st --save-every 1 --log stop.jsonl >out.txt 2>err.txt || status=$?
[[ $status -eq 1 ]] || fail "stop: exit $status, want 1: $(cat err.txt)"
grep -q "step 2: the gradient of wte.weight holds NaN" err.txt || fail "stop: no step and tensor named: $(cat err.txt)"
grep -q "stopped without applying the step" err.txt || fail "stop: $(cat err.txt)"
grep -q "stop.st keeps step 1" err.txt || fail "stop: the kept checkpoint is not named: $(cat err.txt)"
kept=$("$py" inspect.py stop.st)
[[ $kept == "step=1 finite=True "* ]] || fail "stop: the checkpoint is not step 1 with finite tensors: $kept"
[[ $(wc -l <stop.jsonl) -eq 1 ]] || fail "stop: the log has $(wc -l <stop.jsonl) lines, want 1"

# ---- skip -----------------------------------------------------------------------------------------
status=0
"$kiln" train blow.json --data text.txt --on-nonfinite skip --save skip.st --log skip.jsonl >out.txt 2>err.txt ||
    status=$?
[[ $status -eq 0 ]] || fail "skip: exit $status: $(cat err.txt)"
grep -q "skipped 5 steps with a non-finite loss or gradient" out.txt || fail "skip: no summary: $(cat out.txt)"
grep -q "step 2: skipped (the gradient of wte.weight holds NaN" out.txt || fail "skip: no progress line: $(cat out.txt)"
"$py" - <<'EOF' || fail "skip: the log (above)"
import json
rows = [json.loads(l) for l in open("skip.jsonl")]
assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6], rows
assert "skipped" not in rows[0] and rows[0]["loss"] > 0, rows[0]
for r in rows[1:]:
    assert r["loss"] is None and "wte.weight" in r["skipped"], r
EOF
final=$("$py" inspect.py skip.st)
[[ ${final#step=6 } == "${kept#step=1 }" ]] || fail "skip: skipped steps changed the blobs: $final vs $kept"

# ---- off: no check compiled; the loss still stops the run -------------------------------------------
status=0
"$kiln" train blow.json --data text.txt --on-nonfinite off >out.txt 2>err.txt || status=$?
[[ $status -eq 1 ]] && grep -q "step 2: the loss is NaN" err.txt || fail "off: exit $status $(cat err.txt)"
# ... and says the step was applied (there is no guard to keep it out)
grep -q "stopped after applying the step" err.txt && ! grep -q "without applying" err.txt ||
    fail "off: the message misstates what happened: $(cat err.txt)"

# ---- misuse ---------------------------------------------------------------------------------------
status=0
"$kiln" train blow.json --data text.txt --on-nonfinite ignore >out.txt 2>err.txt || status=$?
[[ $status -eq 2 ]] && grep -q "expected stop, skip or off, got 'ignore'" err.txt || fail "bad mode: exit $status $(cat err.txt)"

finish "ok"
