#!/usr/bin/env bash
# test_distributed.sh KILN SRCDIR — data-parallel `mpirun -np 2 kiln train` (docs/distributed.md):
#   - 2 ranks × batch 4 give the parameters and optimizer state of 1 rank × batch 8 after
#     20 AdamW steps with gradient clipping (float tolerance), and consume the same data;
#   - a distributed run resumed from its checkpoint equals an uninterrupted one (bit for
#     bit, with dropout on), and a 2-rank checkpoint resumes on 1 rank;
#   - a rank killed with SIGKILL ends the job with a non-zero status within a bounded time
#     and the last checkpoint still loads; a stopped (hung) rank trips the others'
#     watchdog (--dist-timeout) with a clear message, mid-run and during start-up (the
#     start-up check names the rank that did not arrive);
#   - ranks started with different flags or data (labels included) stop at start-up
#     naming what differs, and a rank that fails at start-up (a missing file) ends the
#     job instead of hanging it;
#   - the non-finite guard agrees across ranks: a model that blows up stops both ranks
#     at the same step naming it (--on-nonfinite stop), or both skip it (skip), the
#     skips in the --log;
#   - the gradient average overlapped with the backward pass gives the bits of the
#     average after it (--dist-serial); the other runs overlap.
# Skipped (exit 77) where mpirun is missing or kiln was built without MPI.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
if ! command -v mpirun >/dev/null; then
    echo "SKIP: mpirun not found (install openmpi-bin and libopenmpi-dev, then rebuild kiln)"
    exit 77
fi
# CI runs as root; oversubscribe: 2 ranks on however many cores there are
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# under mpirun the sanitizer build's leak check would report Open MPI's own allocations
mpi() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 120 mpirun -np "$@"; }

if mpi 1 "$kiln" train --distributed missing.json --data missing.txt >probe.txt 2>&1; then :; fi
if grep -q "distributed training is unavailable" probe.txt; then
    echo "SKIP: this kiln was built without MPI: $(grep unavailable probe.txt)"
    exit 77
fi

# The sanitizer build runs the equivalence and start-up checks only (CI time: every
# mpirun there compiles twice as slowly); the plain build runs everything.
full=1
if ldd "$kiln" 2>/dev/null | grep -q libasan; then
    full=0
    echo "sanitizer build: the equivalence (smallest model) and mismatch checks only; the rest runs in the plain build"
fi

PYTHONPATH="$src/scripts"
export PYTHONPATH

"$py" - <<'EOF'
import random
random.seed(1)
words = "the quick brown fox jumps over a lazy dog and then runs away from the big red barn".split()
open("text.txt", "w").write(" ".join(random.choice(words) for _ in range(3000)) + "\n")
open("val.txt", "w").write(" ".join(random.choice(words) for _ in range(700)) + "\n")
EOF
model() { # model NAME DROPOUT
cat <<EOF
{
  "format": "kiln/1", "name": "$1",
  "dims": {"B": 4, "T": 16},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
    {"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": 16},
    {"name": "blocks", "op": "encoder_layer", "repeat": 1, "heads": 2, "hidden": 32,
     "norm": "pre", "causal": true, "activation": "gelu_tanh", "dropout": $2},
    {"name": "ln_f", "op": "layernorm"},
    {"name": "logits", "op": "linear", "out": 256, "bias": false, "tie": "wte.weight"}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1, "warmup_steps": 5,
            "schedule": "cosine", "grad_clip": 0.5},
  "init": {"seed": 7}
}
EOF
}
model tiny 0 >tiny.json
model drop 0.1 >drop.json
# the fault tests need a run, not a model: the smallest that trains (quick to compile)
cat >small.json <<'EOF'
{
  "format": "kiln/1", "name": "small",
  "dims": {"B": 2, "T": 8},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 8},
    {"name": "logits", "op": "linear", "out": 256}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 1e-3},
  "init": {"seed": 7}
}
EOF
same() { # same A B — parameters and optimizer state within float tolerance; same data position
"$py" - "$1" "$2" <<'EOF'
import json, struct, sys
import numpy as np, safetensors_np
pa, pb = sys.argv[1], sys.argv[2]
a, b = safetensors_np.read(pa), safetensors_np.read(pb)
assert sorted(a) == sorted(b), (sorted(a), sorted(b))
for k in a:
    d, m = float(np.max(np.abs(a[k] - b[k]))), float(np.max(np.abs(a[k])))
    # parameters move by ~lr per step; moments are tiny: relative, with a floor
    limit = 1e-4 * max(m, 1.0) if not k.startswith("optim.") else 1e-3 * m + 1e-9
    assert d <= limit, f"{pa} vs {pb}: {k}: max difference {d:.3g} (values up to {m:.3g})"
def meta(p):
    data = open(p, "rb").read()
    return json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])["__metadata__"]
assert meta(pa)["data_state"] == meta(pb)["data_state"], (meta(pa)["data_state"], meta(pb)["data_state"])
print(f"{pa} = {pb}: {len(a)} tensors within tolerance, same data position")
EOF
}

# ---- 2 ranks × B = 1 rank × 2B ----------------------------------------------------------------------
# (the sanitizer build compiles slowly: it checks this with the smallest model)
eq=tiny.json b=4
[[ $full -eq 1 ]] || eq=small.json b=2
# (with validation on 3 batches, a part of val.txt: the same examples either way)
val=(--val val.txt --val-every 10 --val-batches 3)
run "1 rank, batch $((2 * b))" "$kiln" train $eq --data text.txt --steps 20 --batch $((2 * b)) --save one.safetensors \
    --threads 1 "${val[@]}" --log one.jsonl
run "2 ranks, batch $b" mpi 2 "$kiln" train $eq --data text.txt --steps 20 --batch $b --save two.safetensors \
    --threads 2 --log two.jsonl "${val[@]}"
cp out.txt two_out.txt
grep -q "data-parallel over 2 ranks: batch $b per rank, $((2 * b)) per step" out.txt ||
    fail "no data-parallel line: $(head -3 out.txt)"
[[ $(grep -c "saved two.safetensors" out.txt) -eq 1 ]] || fail "rank 0 alone should report the checkpoint: $(cat out.txt)"
[[ $(wc -l <two.jsonl) -eq 20 ]] || fail "the --log has $(wc -l <two.jsonl) lines, want 20 (rank 0 alone writes it)"
same one.safetensors two.safetensors || fail "2 ranks × batch $b differ from 1 rank × batch $((2 * b)) (above)"
"$py" - <<'EOF' || fail "2 ranks × batch $b validate otherwise than 1 rank × batch $((2 * b)) (above)"
import json
def val(p):
    return {r["step"]: r["val_loss"] for r in map(json.loads, open(p)) if "val_loss" in r}
one, two = val("one.jsonl"), val("two.jsonl")
assert sorted(one) == sorted(two) == [10, 20], (one, two)
for step in one:
    assert abs(one[step] - two[step]) <= 1e-5 * abs(one[step]), f"step {step}: val_loss {one[step]} vs {two[step]}"
EOF

if [[ $full -eq 1 ]]; then
# ---- resume: 2 ranks (with dropout: ranks draw their own masks, and a resumed run the same ones) -------
run "2 ranks, dropout, 20 steps" mpi 2 "$kiln" train drop.json --data text.txt --steps 20 --save full.safetensors \
    --threads 1
run "2 ranks, dropout, 10 steps" mpi 2 "$kiln" train drop.json --data text.txt --steps 20 --stop-at 10 \
    --save part.safetensors --threads 1
run "2 ranks, dropout, resumed" mpi 2 "$kiln" train drop.json --data text.txt --resume part.safetensors \
    --save part.safetensors --threads 1
grep -q "resuming at step 10 of 20" out.txt || fail "the resumed run did not say so: $(head -5 out.txt)"
cmp -s full.safetensors part.safetensors || fail "2 ranks: 10 + --resume + 10 steps differ from 20 steps"

# ---- a 2-rank checkpoint resumed on 1 rank (batch 2B) continues the same run ----------------------------
run "2 ranks, 10 steps" mpi 2 "$kiln" train tiny.json --data text.txt --steps 20 --stop-at 10 --batch 4 \
    --save half.safetensors --threads 1
run "1 rank resumes a 2-rank checkpoint" "$kiln" train tiny.json --data text.txt --resume half.safetensors --batch 8 \
    --save one_of_two.safetensors --threads 1
same one.safetensors one_of_two.safetensors || fail "2 ranks then 1 rank differ from 1 rank throughout (above)"
# without --batch the resume takes the checkpoint's global batch (2 × 4) on its one rank;
# a --batch that changes the global batch is refused
run "1 rank resumes a 2-rank checkpoint, batch from it" "$kiln" train tiny.json --data text.txt \
    --resume half.safetensors --save reuse.safetensors --threads 1
grep -q "batch 8," out.txt || fail "the resume did not take the global batch 8: $(head -2 out.txt)"
same one.safetensors reuse.safetensors || fail "2 ranks then 1 rank (batch from the checkpoint) differ (above)"
status=0
"$kiln" train tiny.json --data text.txt --resume half.safetensors --batch 4 --threads 1 >out.txt 2>err.txt || status=$?
[[ $status -eq 1 ]] && grep -q "trained with --batch 8, not 4" err.txt ||
    fail "a resume that changes the global batch: exit $status, $(head -3 err.txt)"
# -D B=… binds the batch as --batch does: the global batch 8 on one rank, and B=4 is refused
run "1 rank resumes a 2-rank checkpoint, -D B=8" "$kiln" train tiny.json --data text.txt --resume half.safetensors \
    -D B=8 --save dflag.safetensors --threads 1
same one.safetensors dflag.safetensors || fail "2 ranks then 1 rank with -D B=8 differ from 1 rank throughout (above)"
status=0
"$kiln" train tiny.json --data text.txt --resume half.safetensors -D B=4 --threads 1 >out.txt 2>err.txt || status=$?
[[ $status -eq 1 ]] && grep -q "trained with B=8, not 4" err.txt ||
    fail "a resume whose -D B changes the global batch: exit $status, $(head -3 err.txt)"

# ---- overlap: the same bits as averaging after the backward pass --------------------------------
run "2 ranks, serial average" mpi 2 "$kiln" train tiny.json --data text.txt --steps 20 --stop-at 10 --batch 4 \
    --save serial.safetensors --threads 1 --dist-serial
grep -q "after the backward pass (--dist-serial)" out.txt || fail "--dist-serial not reported: $(head -3 out.txt)"
cmp -s half.safetensors serial.safetensors || fail "the overlapped average differs from the serial one"
grep -q "started during the backward pass" two_out.txt || fail "the overlapped run did not report its buckets"

# ---- non-finite steps: every rank stops, or skips, at the same step ----------------------------------
# SGD with lr 1e18: step 1 makes the weights huge, step 2's loss and gradients are NaN
cat >blow.json <<'EOF'
{
  "format": "kiln/1", "name": "blow",
  "dims": {"B": 2, "T": 8},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
    {"name": "h", "op": "linear", "out": 32},
    {"name": "logits", "op": "linear", "out": 256}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "sgd", "lr": 1e18}
}
EOF
status=0
mpi 2 "$kiln" train blow.json --data text.txt --steps 4 --save blow.st --save-every 1 --threads 1 \
    >out.txt 2>err.txt || status=$?
[[ $status -ne 0 && $status -ne 124 ]] || fail "non-finite, stop: mpirun exited $status"
[[ $(grep -c "step 2: the gradient of wte.weight holds NaN" err.txt) -eq 2 ]] ||
    fail "non-finite, stop: both ranks should name step 2 and the tensor: $(grep -v '^\[' err.txt | head -6)"
grep -q "blow.st keeps step 1" err.txt || fail "non-finite, stop: the kept checkpoint is not named"
run "non-finite, skip" mpi 2 "$kiln" train blow.json --data text.txt --steps 4 --on-nonfinite skip --log skip.jsonl \
    --threads 1
grep -q "skipped 3 steps with a non-finite loss or gradient" out.txt || fail "non-finite, skip: no summary: $(cat out.txt)"
"$py" - <<'EOF' || fail "non-finite, skip: the log (above)"
import json
rows = [json.loads(l) for l in open("skip.jsonl")]
assert [r["step"] for r in rows] == [1, 2, 3, 4], rows
assert "skipped" not in rows[0] and rows[0]["loss"] > 0, rows[0]
for r in rows[1:]:
    assert r["loss"] is None and "wte.weight" in r["skipped"], r
EOF

# ---- faults -----------------------------------------------------------------------------------------
# rank 1 is killed (SIGKILL) once rank 0 has saved a checkpoint
cat >victim.sh <<'EOF'
#!/usr/bin/env bash
if [[ $OMPI_COMM_WORLD_RANK == 1 ]]; then
    ( while [[ ! -f dead.safetensors ]]; do sleep 0.1; done; kill -9 $$ ) &
fi
exec "$@"
EOF
start=$(date +%s)
status=0
mpi 2 bash victim.sh "$kiln" train small.json --data text.txt --steps 1000000 --save-every 2 --save dead.safetensors \
    --threads 1 >out.txt 2>err.txt || status=$?
took=$(($(date +%s) - start))
[[ $status -ne 0 && $status -ne 124 ]] || fail "a killed rank: mpirun exited $status (124: it hung)"
[[ $took -lt 100 ]] || fail "a killed rank: the job took $took s to stop"
grep -qi "signal 9\|killed" err.txt || fail "a killed rank: no message naming it: $(tail -5 err.txt)"
"$py" -c 'import safetensors_np; safetensors_np.read("dead.safetensors")' 2>/dev/null ||
    fail "the checkpoint left by the killed run does not load"
run "resume after the killed run" "$kiln" train small.json --data text.txt --resume dead.safetensors --steps 1 \
    --threads 1 >/dev/null || true

# signal_rank1 SCRIPT SIGNAL FILE — writes SCRIPT, a wrapper (bash SCRIPT CMD...) that runs
# CMD and, on rank 1 only, sends it SIGNAL once FILE exists (the first checkpoint)
signal_rank1() {
    cat >"$1" <<EOF
#!/usr/bin/env bash
if [[ \$OMPI_COMM_WORLD_RANK == 1 ]]; then
    ( while [[ ! -f $3 ]]; do sleep 0.1; done; kill -$2 \$\$ ) &
fi
exec "\$@"
EOF
}

# rank 1 stops (SIGSTOP: hung, not dead): rank 0's watchdog ends the job
signal_rank1 hang.sh STOP hang.safetensors
status=0
mpi 2 bash hang.sh "$kiln" train small.json --data text.txt --steps 1000000 --save-every 2 --save hang.safetensors \
    --dist-timeout 2 --threads 1 >out.txt 2>err.txt || status=$?
[[ $status -ne 0 && $status -ne 124 ]] || fail "a hung rank: mpirun exited $status (124: it hung)"
grep -q "waited 2 s for the other ranks" err.txt || fail "a hung rank: no watchdog message: $(tail -5 err.txt)"

# SIGTERM to rank 1 alone: every rank stops at the same step, rank 0 saves and alone
# reports it (rank 1 has no --save, and must not say "nothing kept")
signal_rank1 term.sh TERM term.safetensors
status=0
mpi 2 bash term.sh "$kiln" train small.json --data text.txt --steps 1000000 --save-every 2 --save term.safetensors \
    --threads 1 >out.txt 2>err.txt || status=$?
[[ $status -ne 0 && $status -ne 124 ]] || fail "SIGTERM to rank 1: mpirun exited $status"
[[ $(grep -c "interrupted at step" err.txt) -eq 1 ]] && grep -q "checkpoint saved to term.safetensors" err.txt &&
    ! grep -q "nothing kept" err.txt || fail "SIGTERM to rank 1: rank 0 alone should report: $(grep -v '^\[' err.txt)"

# rank 1 stops during start-up (after joining MPI: its warning about --save is out;
# before the start-up check): rank 0 does not wait for it without end, and names it.
# Rank 1 compiles without the compile cache, so the time from its warning to the check
# is a real compile, not a cache hit of a few ms that the watcher's poll could miss.
cat >hangstart.sh <<'EOF'
#!/usr/bin/env bash
if [[ $OMPI_COMM_WORLD_RANK == 1 ]]; then
    ( while ! grep -q "no --save" start1.err 2>/dev/null; do sleep 0.005; done; kill -STOP $$ ) &
    KILN_CACHE_DIR=off exec "$@" 2>start1.err
fi
exec "$@"
EOF
status=0
mpi 2 bash hangstart.sh "$kiln" train small.json --data text.txt --steps 5 --dist-timeout 2 --threads 1 \
    >out.txt 2>err.txt || status=$?
[[ $status -ne 0 && $status -ne 124 ]] || fail "a rank hung at start-up: mpirun exited $status (124: it hung)"
grep -q "rank 0: rank 1 has not reached the start-up check after 2 s (--dist-timeout)" err.txt ||
    fail "a rank hung at start-up: no message naming it: $(grep -v '^\[' err.txt | tail -5)"

# one rank fails at start-up (its data file is missing): the job ends, naming it
cat >onefail.sh <<'EOF'
#!/usr/bin/env bash
data=text.txt
[[ $OMPI_COMM_WORLD_RANK == 1 ]] && data=missing.txt
exec "$@" --data "$data"
EOF
status=0
mpi 2 bash onefail.sh "$kiln" train small.json --steps 5 --threads 1 >out.txt 2>err.txt || status=$?
[[ $status -ne 0 && $status -ne 124 ]] || fail "a rank failing at start-up: mpirun exited $status (124: it hung)"
grep -q "missing.txt: error: cannot open" err.txt || fail "a rank failing at start-up: no message: $(tail -5 err.txt)"
fi # full

# rank1.sh "ARGS" CMD…: CMD, with ARGS added on rank 1 only
cat >rank1.sh <<'EOF'
#!/usr/bin/env bash
extra=$1
shift
[[ $OMPI_COMM_WORLD_RANK == 1 ]] && exec "$@" $extra
exec "$@"
EOF

if [[ $full -eq 1 ]]; then
# ranks whose data differ only in the labels: the same texts, every label flipped on rank 1
cat >cls.json <<'EOF'
{
  "format": "kiln/1", "name": "cls",
  "dims": {"B": 2, "T": 8},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "mask": {"shape": ["B", "T"], "dtype": "i32"},
             "labels": {"shape": ["B"], "dtype": "i32"}},
  "layers": [
    {"name": "emb", "op": "embedding", "in": "tokens", "vocab": 262, "dim": 8},
    {"name": "pooled", "op": "pool", "kind": "first"},
    {"name": "head", "op": "linear", "out": 2}
  ],
  "outputs": ["head"],
  "losses": [{"op": "cross_entropy", "in": ["head", "labels"]}],
  "train": {"optimizer": "adamw", "lr": 1e-2},
  "tokenizer": {"kind": "byte"}
}
EOF
printf '1\tgood day\n0\tbad day\n1\tfine one\n0\tawful one\n' >cls.tsv
printf '0\tgood day\n1\tbad day\n0\tfine one\n1\tawful one\n' >flip.tsv
status=0
# rank1data.sh FILE0 FILE1 CMD…: CMD --data FILE1 on rank 1, --data FILE0 on the others (a flag
# given twice is refused, so rank1.sh cannot override --data)
cat >rank1data.sh <<'EOF'
#!/usr/bin/env bash
data=$1
[[ $OMPI_COMM_WORLD_RANK == 1 ]] && data=$2
shift 2
exec "$@" --data "$data"
EOF
mpi 2 bash rank1data.sh cls.tsv flip.tsv "$kiln" train cls.json --task classify --steps 2 --threads 1 \
    >out.txt 2>err.txt || status=$?
[[ $status -ne 0 ]] || fail "ranks whose labels differ trained"
grep -q "the training data .* differs between ranks: rank 1 disagrees with rank 0" err.txt ||
    fail "labels that differ between ranks: no clear message: $(grep -v '^\[' err.txt | head -5)"

# ranks whose flags differ but bind the same dims (-D T=8 is small.json's own T) agree
run "2 ranks, -D T=8 on rank 1 only" mpi 2 bash rank1.sh "-D T=8" "$kiln" train small.json --data text.txt -D B=2 \
    --steps 2 --threads 1
# a compiler stage turned off on one rank: other kernels, other rounding
status=0
mpi 2 bash rank1.sh "--disable-pass fuse" "$kiln" train small.json --data text.txt --steps 2 --threads 1 \
    >out.txt 2>err.txt || status=$?
[[ $status -ne 0 ]] && grep -q "the training flags .* differs between ranks: rank 1 disagrees" err.txt ||
    fail "--disable-pass fuse on rank 1 only: exit $status, $(grep -v '^\[' err.txt | head -5)"
fi # full

# ranks with different flags
cat >mismatch.sh <<'EOF'
#!/usr/bin/env bash
extra=()
[[ $OMPI_COMM_WORLD_RANK == 1 ]] && extra=(--seed 9)
exec "$@" "${extra[@]}"
EOF
status=0
mpi 2 bash mismatch.sh "$kiln" train small.json --data text.txt --steps 2 --threads 1 >out.txt 2>err.txt || status=$?
[[ $status -ne 0 ]] || fail "ranks with different --seed trained"
grep -q "the training flags .* differs between ranks: rank 1 disagrees with rank 0" err.txt ||
    fail "mismatched flags: no clear message: $(grep -v '^\[' err.txt | head -5)"

finish "distributed training: all checks passed"
