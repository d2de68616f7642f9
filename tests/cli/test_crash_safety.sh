#!/usr/bin/env bash
# test_crash_safety.sh KILN SRCDIR — kill -9 at random moments never costs more than the
# steps since the last checkpoint (docs/reliability.md, "Crashes"):
#   - a chain of KILN_CRASH_TRIALS (default 50, 8 under ASan) runs of `kiln train --save-every 1`, each
#     killed with SIGKILL and the next resuming from the newest checkpoint, ends with
#     the same checkpoint file, byte for byte, as one uninterrupted run, and the same
#     --log lines (step, loss, lr), each step once. A third of the kills wait for a
#     checkpoint temporary to appear and land inside the save, a third land a random
#     time into training, a third during start-up (compile, resume). crash_shim.c,
#     preloaded, slows the writes of temporaries so that a save is a wide target.
#     After every kill: the checkpoint parses in full and its step never goes back;
#     the log's steps are 1..L with none twice; the temporaries a killed save left are
#     gone once the next run has started training.
#   - --resume reuses the checkpoint's -D dims, --batch and --seed and refuses conflicting ones;
#   - disk full (a small tmpfs when `unshare -m` can mount one, and the shim's ENOSPC)
#     and permission errors (the shim's EACCES; an unwritable directory) while saving
#     print what failed and which checkpoint is kept, and keep it, with no temporary.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
cc=${CC:-cc}
# A preloaded library ahead of a dynamically linked ASan runtime is harmless here.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"

"$cc" -std=c17 -O2 -shared -fPIC -o shim.so "$src/tests/cli/crash_shim.c" -ldl ||
    { echo "cannot build crash_shim.c: skipped"; exit 77; }

"$py" - <<'EOF'
import random
random.seed(1)
words = "the quick brown fox jumps over a lazy dog and then runs away from the big red barn".split()
open("text.txt", "w").write(" ".join(random.choice(words) for _ in range(3000)) + "\n")
EOF
# tiny, but with what exact resume must carry: dropout (seeded by the step), AdamW's
# moments, a warmup and cosine schedule, a char tokenizer trained on the data
cat >m.json <<'EOF'
{
  "format": "kiln/1", "name": "crash",
  "dims": {"B": 4, "T": 16},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 64, "dim": 16},
    {"name": "drop", "op": "dropout", "p": 0.1},
    {"name": "h", "op": "linear", "out": 32},
    {"name": "act", "op": "gelu_tanh"},
    {"name": "logits", "op": "linear", "out": 64}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 3e-3, "warmup_steps": 20, "schedule": "cosine", "grad_clip": 1.0},
  "tokenizer": {"kind": "char"},
  "init": {"seed": 5}
}
EOF

# ---- kill -9, again and again ------------------------------------------------------------------
# 50 kills; 8 in a sanitizer build, where each start-up costs four times the CPU (the
# plain build's run is the one with the full count; this one looks for memory errors)
trials=${KILN_CRASH_TRIALS:-50}
if readelf -d "$kiln" 2>/dev/null | grep -q 'libasan'; then trials=${KILN_CRASH_TRIALS:-8}; fi
export KILN_CRASH_TRIALS=$trials
"$py" - "$kiln" <<'EOF' || fail "kill -9 chain (above)"
import collections, json, os, random, signal, struct, subprocess, sys, time
kiln = sys.argv[1]
TRIALS = int(os.environ.get("KILN_CRASH_TRIALS", "50"))
STEPS = 400
seed = int(os.environ.get("KILN_CRASH_SEED", str(int(time.time()))))
rng = random.Random(seed)
print(f"seed {seed} (KILN_CRASH_SEED to repeat), {TRIALS} kills")
CK, LOG = "ck.safetensors", "chain.jsonl"
base = ["train", "m.json", "--data", "text.txt", "--steps", str(STEPS), "--threads", "1"]
t_start = time.time()

def run_to_end(args, what):
    r = subprocess.run([kiln] + base + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{what}: exit {r.returncode}: {r.stderr[-600:]}")

def temporaries():
    return {f for f in os.listdir(".") if f.startswith(CK + ".tmp.")}

def ckpt_step(path):
    """The step of a checkpoint that parses in full (header, every tensor inside the file)."""
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__")
    end = max(v["data_offsets"][1] for v in h.values())
    assert len(b) == 8 + n + end, f"{path}: {len(b)} bytes, the header describes {8 + n + end}"
    return int(meta["step"])

def log_steps():
    if not os.path.exists(LOG):
        return []
    lines = open(LOG).read().split("\n")
    assert lines[-1] == "", f"a torn last line in the log: {lines[-1]!r}"
    return [json.loads(l)["step"] for l in lines[:-1]]

def log_stamp():
    if not os.path.exists(LOG):
        return None
    st = os.stat(LOG)
    return st.st_size, st.st_mtime_ns

def wait_for(cond, p, what, limit=120):
    t0 = time.time()
    while not cond():
        if p.poll() is not None:
            return False
        if time.time() - t0 > limit:
            p.kill()
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.001)
    return True

# the reference: one uninterrupted run (it saves once; a checkpoint does not depend on --save-every)
run_to_end(["--save", "ref.safetensors", "--log", "ref.jsonl", "--save-every", str(STEPS)], "reference run")
t_ref = time.time() - t_start

shim = dict(os.environ, LD_PRELOAD=os.path.abspath("shim.so"), KILN_SHIM_WRITE_US="300", KILN_SHIM_FSYNC_MS="10")
modes = ("in a save", "in training", "at start-up")
kills = collections.Counter()
landed = collections.Counter()   # where the kills inside a save were
step, pending_stale, t_ready = 0, set(), 1.0
for trial in range(TRIALS):
    mode = modes[trial % 3]
    args = ["--save-every", "1", "--save", CK, "--log", LOG] + (["--resume", CK] if os.path.exists(CK) else [])
    before = temporaries()
    t0 = time.time()
    p = subprocess.Popen([kiln] + base + args, env=shim, stdout=subprocess.DEVNULL, stderr=open("trial.err", "w"))
    stamp = log_stamp()
    def trained(k=1):   # this run logged k steps past the checkpoint (read while kiln writes the log)
        if log_stamp() == stamp:
            return False
        lines = open(LOG).read().split("\n")[:-1]
        return bool(lines) and json.loads(lines[-1])["step"] >= step + k
    # the kills in a save or in training come after 1-4 steps of this run, so that the
    # chain moves on and resumes from many different steps
    k = rng.randint(1, 4)
    if mode == "in a save":
        seen = set()
        def kth_save():
            seen.update(temporaries() - before)
            return len(seen) >= k
        alive = wait_for(kth_save, p, f"checkpoint temporary {k}")
        time.sleep(rng.uniform(0, 0.015))
    elif mode == "in training":
        alive = wait_for(trained, p, "a trained step")
        t_ready = time.time() - t0
        alive = alive and wait_for(lambda: trained(k), p, f"{k} trained steps")
        time.sleep(rng.uniform(0, 0.03))
    else:
        deadline = t0 + rng.uniform(0, t_ready)   # at the latest when training has begun
        alive = wait_for(lambda: time.time() >= deadline or trained(), p, "the kill time")
    if not alive or p.poll() is not None:
        sys.exit(f"trial {trial}: kiln ended by itself (exit {p.returncode}) before the kill: "
                 f"{open('trial.err').read()[-600:]}")
    p.send_signal(signal.SIGKILL)
    p.wait()
    kills[mode] += 1
    # what the kill left
    mine = {t for t in temporaries() if t.startswith(f"{CK}.tmp.{p.pid}.")}
    if mine:
        size = os.path.getsize(next(iter(mine)))
        landed["writing the temporary" if os.path.exists(CK) and size < os.path.getsize(CK)
               else "between the temporary and the rename"] += 1
    new_step = ckpt_step(CK) if os.path.exists(CK) else 0
    assert new_step >= step, f"trial {trial}: the checkpoint went back from step {step} to {new_step}"
    steps = log_steps()
    assert steps == list(range(1, len(steps) + 1)), f"trial {trial}: log steps {steps[:3]}…{steps[-5:]} repeat or skip"
    assert new_step <= len(steps), f"trial {trial}: checkpoint at step {new_step}, log at {len(steps)}"
    if new_step > step:   # this run saved, so it got past its start and cleaned up
        left = pending_stale & temporaries()
        assert not left, f"trial {trial}: stale temporaries of killed saves not removed: {sorted(left)}"
        pending_stale = set()
    pending_stale |= mine
    if trial % 10 == 9:
        print(f"  {trial + 1} kills, checkpoint at step {new_step}, {time.time() - t_start:.1f} s", flush=True)
    step = new_step

# the last run goes to the end, unhindered
run_to_end(["--save-every", "1", "--save", CK, "--log", LOG] + (["--resume", CK] if os.path.exists(CK) else []),
           "the final resumed run")
assert not temporaries(), f"temporaries left at the end: {sorted(temporaries())}"
a, b = open("ref.safetensors", "rb").read(), open(CK, "rb").read()
assert a == b, "the killed-and-resumed run's checkpoint differs from the uninterrupted run's"
def metrics(path):
    return [(r["step"], r["loss"], r["lr"]) for r in map(json.loads, open(path))]
ref, got = metrics("ref.jsonl"), metrics(LOG)
assert len(got) == STEPS and [s for s, _, _ in got] == list(range(1, STEPS + 1)), "log steps"
diff = [(x, y) for x, y in zip(ref, got) if x != y]
assert not diff, f"log lines differ from the uninterrupted run's: {diff[:3]}"
in_save = sum(landed.values())
print(f"kill -9: {sum(kills.values())} kills ({', '.join(f'{v} {k}' for k, v in kills.items())}); "
      f"{in_save} landed inside a save ({', '.join(f'{v} {k}' for k, v in landed.items()) or 'none'}); "
      f"checkpoint step {step} of {STEPS} at the last kill")
print(f"every checkpoint parsed and resumed; the final checkpoint and log equal the uninterrupted run's; "
      f"{time.time() - t_start:.1f} s (reference run {t_ref:.1f} s)")
assert in_save >= TRIALS // 4, f"only {in_save} of {TRIALS} kills landed inside a save"
EOF

# ---- --resume keeps the run's shape and seed ----------------------------------------------------
expect_fail() { # expect_fail STATUS PATTERN CMD... — must exit STATUS with PATTERN on stderr
    local want=$1 pattern=$2 status=0
    shift 2
    "$@" >out.txt 2>err.txt || status=$?
    if [[ $status -ne $want ]]; then
        fail "$*: exit $status, expected $want — $(head -n 3 err.txt)"
    elif ! grep -q -- "$pattern" err.txt; then
        fail "$*: stderr lacks '$pattern': $(head -n 3 err.txt)"
    fi
}
"$kiln" train m.json --data text.txt --steps 8 --stop-at 4 --threads 1 -D T=8 --batch 2 --save shape.safetensors \
    >/dev/null 2>&1 || fail "train -D T=8 --batch 2"
"$py" - <<'EOF' || fail "the checkpoint's dims"
import json, struct
b = open("shape.safetensors", "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert meta["dims"] == "B=2,T=8" and meta["batch"] == "2", meta
EOF
expect_fail 1 "trained with --batch 2, not 4" "$kiln" train m.json --data text.txt --resume shape.safetensors --batch 4
expect_fail 1 "trained with T=8, not 16" "$kiln" train m.json --data text.txt --resume shape.safetensors -D T=16
expect_fail 1 "trained with --seed 5, not 6" "$kiln" train m.json --data text.txt --resume shape.safetensors --seed 6
"$kiln" train m.json --data text.txt --resume shape.safetensors --save shape.safetensors --threads 1 >out.txt 2>err.txt ||
    fail "resume without -D and --batch: $(head -n 3 err.txt)"
grep -q "batch 2, 16 tokens per step" out.txt || fail "resume did not reuse B=2, T=8: $(head -n 2 out.txt)"
"$kiln" train m.json --data text.txt --steps 8 --threads 1 -D T=8 --batch 2 --save straight.safetensors \
    >/dev/null 2>&1 || fail "train 8 straight"
cmp -s shape.safetensors straight.safetensors || fail "4 + --resume 4 (dims from the checkpoint) differs from 8 steps"
"$kiln" train m.json --data text.txt --steps 9 --resume shape.safetensors -D T=8 --batch 2 --seed 5 >/dev/null \
    2>err.txt || fail "resume with the same -D, --batch and --seed: $(head -n 3 err.txt)"

# ---- disk full and permission errors keep the previous checkpoint -------------------------------
"$kiln" train m.json --data text.txt --steps 20 --stop-at 4 --threads 1 --save keep.safetensors >/dev/null 2>&1 ||
    fail "train 4 steps"
cp keep.safetensors keep.orig
save_fails() { # save_fails WHAT PATTERN ENV... — a resumed run whose saves fail
    local what=$1 pattern=$2 status=0
    shift 2
    env "$@" "$kiln" train m.json --data text.txt --threads 1 --resume keep.safetensors --save keep.safetensors \
        --save-every 2 >out.txt 2>err.txt || status=$?
    [[ $status -eq 1 ]] || fail "$what: exit $status, expected 1"
    grep -q -- "$pattern" err.txt || fail "$what: stderr lacks '$pattern': $(head -n 3 err.txt)"
    grep -q "step 6 was not saved; the checkpoint of step 4 is kept" err.txt ||
        fail "$what: does not say which checkpoint is kept: $(cat err.txt)"
    cmp -s keep.orig keep.safetensors || fail "$what: the previous checkpoint changed"
    if compgen -G "keep.safetensors.tmp.*" >/dev/null; then fail "$what: a temporary was left: $(ls keep.safetensors.tmp.*)"; fi
}
save_fails "disk full (shim)" "No space left on device" LD_PRELOAD="$work/shim.so" KILN_SHIM_ENOSPC_AFTER=20000
save_fails "permission denied (shim)" "Permission denied" LD_PRELOAD="$work/shim.so" KILN_SHIM_EACCES=1

# a real disk full: a tmpfs with room for one checkpoint, not two (needs mount rights)
size=$(stat -c %s keep.safetensors)
mkdir full
if unshare -m true 2>/dev/null; then
    unshare -m bash -c '
        mount -t tmpfs -o size=$(( '"$size"' * 3 / 2 / 4096 * 4096 + 4096 )) tmpfs full || exit 77
        cp keep.safetensors full/
        status=0
        "$0" train m.json --data text.txt --threads 1 --resume full/keep.safetensors --save full/keep.safetensors \
            --save-every 2 >out.txt 2>err.txt || status=$?
        cmp -s keep.orig full/keep.safetensors || echo "the previous checkpoint changed" >>err.txt
        if ls full | grep -q tmp; then echo "a temporary was left" >>err.txt; fi
        exit $status' "$kiln" && status=0 || status=$?
    if [[ $status -eq 77 ]]; then
        echo "tmpfs: cannot mount, the real disk-full case is skipped"
    else
        [[ $status -eq 1 ]] || fail "disk full (tmpfs): exit $status, expected 1"
        grep -q "No space left on device" err.txt && grep -q "the checkpoint of step 4 is kept" err.txt &&
            ! grep -q -e "changed" -e "was left" err.txt || fail "disk full (tmpfs): $(cat err.txt)"
    fi
else
    echo "unshare -m: not permitted, the real disk-full case is skipped"
fi

# a directory that cannot be written: refused before training (as another user when root)
mkdir ro
cp keep.safetensors ro/
chmod 555 ro
as_user=()
if [[ $(id -u) -eq 0 ]]; then
    command -v setpriv >/dev/null && as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    chmod 755 "$work" && chmod 644 ro/keep.safetensors m.json text.txt
fi
if [[ $(id -u) -ne 0 || ${#as_user[@]} -gt 0 ]]; then
    expect_fail 1 "its directory is missing or not writable" "${as_user[@]}" "$kiln" train m.json --data text.txt \
        --resume ro/keep.safetensors --save ro/keep.safetensors
    cmp -s keep.orig ro/keep.safetensors || fail "unwritable directory: the checkpoint changed"
else
    echo "root without setpriv: the unwritable-directory case is skipped"
fi
chmod 755 ro

finish "ok"
