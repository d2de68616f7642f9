#!/usr/bin/python3
"""train_bench.py KILN [SRCDIR] [--quick] — char_gpt training: kiln's compiled step vs PyTorch 1.13.

Measures, in one run on this machine:
  1. step time of examples/char_gpt.json at B=8, T=256 (6 pre-LN causal blocks, d=384,
     6 heads, gelu_tanh, learned positions, tied 256-way head; AdamW with the model
     file's train settings, grad clip 1.0): kiln via `kiln train` (`kiln bench --train`
     is not implemented yet) — per-step compute time recovered from the --log's
     cumulative tokens_per_s, WARMUP steps dropped, the next STEPS timed — and the same
     architecture in PyTorch (bench/torch_gpt.py's TrainableGPT: CharGPT with the weights made
     trainable: forward, cross_entropy, backward, clip_grad_norm_, AdamW.step). The two
     are run in alternating rounds (the machine is shared); the median over all timed
     steps of all rounds is reported, with the ratio PyTorch / kiln (>1: kiln faster);
  2. the loss reached on Debian's fortunes (prepared exactly as scripts/demo.sh does,
     same held-out split) after CURVE_STEPS steps at -D T=64, batch 8, with the model
     file's hyperparameters and schedule (lr 3e-4, warmup 100, cosine to min_lr 0 over
     CURVE_STEPS, AdamW betas (0.9, 0.999), eps 1e-8, weight decay 0.1 on every
     parameter, clip 1.0). Both start from the same weights (`kiln init`: the scheme and
     seed `kiln train` uses). The data order differs: kiln's batcher and a numpy
     re-implementation of the same scheme (epoch = windows of T+1 bytes, T apart, from a
     random shift in [0, T), shuffled) with another random generator. Both final models
     are evaluated by the same PyTorch code on the same held-out windows — every window
     `kiln eval` uses (file order, shift 0, T apart) — and kiln's own `kiln eval` figure
     is printed as a cross-check of that code.

PyTorch runs with forward_bench.py's settings (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=2,
torch.set_num_threads(1): its fastest setting on this 2-core machine). bench/all.py is the
side-by-side step-time comparison at PyTorch's best setting and 2 threads; this script
adds what the step learns. PyTorch trains in this process, and its OpenBLAS threads spin
for ~0.1 s after its steps: before each timed kiln run the script waits until this process
is idle (bench/settle.py), and kiln and PyTorch alternate their order from round to round. Needs python3-torch (Debian), numpy and the fortunes (apt-get
install fortunes); exits 77 (skipped) without them. --quick (ctest's smoke test): B=2,
T=32, one round of 1 + 1 steps, a 10-step curve at T=32 held out on 2 KiB.
OPENBLAS_NUM_THREADS=2 lets PyTorch's GEMMs (Debian's torch calls OpenBLAS) use both cores
while kiln computes on one; BENCH_OPENBLAS_THREADS=1 makes PyTorch strictly single-threaded.
Environment: ROUNDS (default 3), STEPS (timed steps per round, 6), WARMUP (2),
CURVE_STEPS (150; 0 skips part 2), BENCH_OPENBLAS_THREADS (2), KILN_THREADS (1: passed to
`kiln train --threads`).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ["OMP_NUM_THREADS"] = "1"          # before torch is imported
os.environ["OPENBLAS_NUM_THREADS"] = os.environ.get("BENCH_OPENBLAS_THREADS", "2")  # PyTorch's GEMMs

QUICK = "--quick" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--quick"]
FORTUNES = "/usr/share/games/fortunes"
try:
    import numpy as np  # noqa: E402
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402
except ImportError as e:
    print(f"train_bench: skipped, PyTorch is not available ({e}; apt-get install python3-torch)")
    sys.exit(77)
if not os.path.isdir(FORTUNES):
    print(f"train_bench: skipped, no {FORTUNES} (apt-get install fortunes)")
    sys.exit(77)

KILN = os.path.abspath(ARGS[0]) if len(ARGS) > 0 else "build/kiln"
SRC = os.path.abspath(ARGS[1]) if len(ARGS) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "scripts"))
sys.path.insert(0, os.path.join(SRC, "bench"))
import safetensors_np  # noqa: E402
import settle  # noqa: E402
from torch_gpt import CharGPT, TrainableGPT, model_shape, torch_step  # noqa: E402
OPENBLAS_THREADS = os.environ["OPENBLAS_NUM_THREADS"]  # read by OpenBLAS when torch loaded it

MODEL = os.path.join(SRC, "examples", "char_gpt.json")
ROUNDS = int(os.environ.get("ROUNDS", 1 if QUICK else 3))
STEPS = int(os.environ.get("STEPS", 1 if QUICK else 6))
WARMUP = int(os.environ.get("WARMUP", 1 if QUICK else 2))
CURVE_STEPS = int(os.environ.get("CURVE_STEPS", 10 if QUICK else 150))
BATCH = 2 if QUICK else 8
STEP_T = 32 if QUICK else 256   # the step-time part's T
CURVE_T = 32 if QUICK else 64   # the learning-curve part's T
LAYERS, HEADS, _ = model_shape(MODEL)
KILN_THREADS = os.environ.get("KILN_THREADS", "1")  # `kiln train --threads`: one core, like the figures

with open(MODEL) as f:
    TRAIN = json.load(f)["train"]


def kiln(*args):
    return subprocess.run([KILN, *args], check=True, capture_output=True, text=True).stdout


def prepare_fortunes(work):
    """scripts/demo.sh's data: every fortune text file; every 150th fortune held out."""
    parts = []
    d = FORTUNES
    for name in sorted(os.listdir(d)):  # the shell glob's order (C locale: plain names)
        path = os.path.join(d, name)
        if name.endswith((".dat", ".u8")) or name in ("art", "ascii-art") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            parts.append(f.read())
    text = b"".join(parts)
    fortunes = re.split(rb"(?m)^%\n", text)
    train = b"%\n".join(f for i, f in enumerate(fortunes) if i % 150 != 75)
    held = b"%\n".join(f for i, f in enumerate(fortunes) if i % 150 == 75)
    if QUICK:
        held = held[:2048]  # --quick: 63 windows of 32 (both models are evaluated on all of it)
    paths = os.path.join(work, "train.txt"), os.path.join(work, "val.txt")
    for p, data in zip(paths, (train, held)):
        with open(p, "wb") as f:
            f.write(data)
    print(f"fortunes: {len(fortunes)}, {len(train)} bytes to train on, {len(held)} bytes held out")
    return paths, train, held


def lr_at(step, steps):
    """driver/schedule.c (docs/training.md): warmup, then cosine to min_lr."""
    lr, min_lr, warm = TRAIN["lr"], TRAIN.get("min_lr", 0.0), TRAIN.get("warmup_steps", 0)
    if step < warm:
        return lr * (step + 1) / warm
    if steps <= warm:
        return lr
    q = min(max((step - warm) / (steps - warm), 0.0), 1.0)
    sched = TRAIN.get("schedule", "constant")
    if sched == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1 + np.cos(np.pi * q))
    if sched == "linear":
        return min_lr + (lr - min_lr) * (1 - q)
    return lr


class Batcher:
    """kiln's clm training order re-implemented (docs/data.md), another random generator."""

    def __init__(self, data, T, seed):
        self.data, self.T, self.rng, self.order = np.frombuffer(data, np.uint8).astype(np.int64), T, np.random.default_rng(seed), []

    def next(self, B):
        rows = []
        while len(rows) < B:
            if not self.order:
                shift = int(self.rng.integers(0, self.T))
                starts = np.arange(shift, len(self.data) - self.T, self.T)
                self.order = list(self.rng.permutation(starts))
            s = self.order.pop()
            rows.append(self.data[s:s + self.T + 1])
        w = torch.from_numpy(np.stack(rows))
        return w[:, :-1], w[:, 1:]


SETTLER = settle.Settler()


def kiln_step_times(train_txt, work, tag):
    """One `kiln train` at B=BATCH, T=STEP_T: per-step compute times (s) after WARMUP steps."""
    log = os.path.join(work, f"steps-{tag}.jsonl")
    SETTLER.ran()  # PyTorch may have run in this process: always wait
    SETTLER.wait_idle([os.getpid()])  # its threads idle first
    kiln("train", MODEL, "-D", f"T={STEP_T}", "--data", train_txt, "--batch", str(BATCH), "--steps",
         str(WARMUP + STEPS), "--log", log,
         "--threads", KILN_THREADS)
    rows = [json.loads(line) for line in open(log)]
    tokens = BATCH * STEP_T
    cum = [tokens * r["step"] / r["tokens_per_s"] for r in rows]  # compute seconds after each step
    times = [b - a for a, b in zip([0.0] + cum, cum)]
    return times[WARMUP:]


def torch_step_times(weights, batcher):
    model = TrainableGPT(weights, TRAIN, LAYERS, HEADS)
    opt = model.optimizer()
    times = []
    for s in range(WARMUP + STEPS):
        x, y = batcher.next(BATCH)
        t0 = time.perf_counter()
        torch_step(model, opt, x, y, lr_at(s, WARMUP + STEPS))
        times.append(time.perf_counter() - t0)
    return times[WARMUP:]


def held_out_loss(weights, held, T):
    """Mean cross-entropy over every window kiln eval uses: file order, shift 0, T apart."""
    model = CharGPT(weights, LAYERS, HEADS)
    data = np.frombuffer(held, np.uint8).astype(np.int64)
    starts = list(range(0, len(data) - T, T))
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(starts), 32):
            w = torch.from_numpy(np.stack([data[s:s + T + 1] for s in starts[i:i + 32]]))
            logits = model(w[:, :-1])
            total += float(F.cross_entropy(logits.reshape(-1, 256), w[:, 1:].reshape(-1), reduction="sum"))
            count += w[:, 1:].numel()
    return total / count, len(starts)


def threads():
    """Threads of this process (OpenBLAS starts its workers when torch loads it)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return "?"


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        (train_txt, val_txt), train, held = prepare_fortunes(work)
        w_path = os.path.join(work, "init.safetensors")
        kiln("init", MODEL, "-o", w_path)
        init = safetensors_np.read(w_path)

        # 1. step time, B=8 T=256, alternating rounds
        print(f"== step time: B={BATCH} T={STEP_T}, {ROUNDS} rounds of {WARMUP} warm-up + {STEPS} timed steps each")
        print(f"fairness: {settle.describe()} (here: this process, before each kiln run); kiln and PyTorch "
              f"alternate their order")
        k_all, t_all = [], []
        batcher = Batcher(train, STEP_T, 1)
        for r in range(ROUNDS):
            if r % 2 == 0:
                k = kiln_step_times(train_txt, work, r)
                t = torch_step_times(init, batcher)
            else:
                t = torch_step_times(init, batcher)
                k = kiln_step_times(train_txt, work, r)
            k_all += k
            t_all += t
            print(f"round {r + 1}: kiln {' '.join(f'{x:.2f}' for x in k)} s;  PyTorch {' '.join(f'{x:.2f}' for x in t)} s")
        k_med, t_med = median(k_all), median(t_all)

        if CURVE_STEPS <= 0:
            print(f"step time B={BATCH} T={STEP_T} (median of {len(k_all)} steps each): kiln {k_med:.3f} s, "
                  f"PyTorch {t_med:.3f} s (OPENBLAS_NUM_THREADS={OPENBLAS_THREADS}, {threads()} threads); "
                  f"PyTorch / kiln = {t_med / k_med:.2f}x; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            return

        # 2. loss after CURVE_STEPS at T=64 (kiln in the background while PyTorch trains:
        #    only losses are compared here, not times)
        print(f"== fortunes: {CURVE_STEPS} steps, batch {BATCH}, T={CURVE_T}")
        ck = os.path.join(work, "kiln.safetensors")
        klog = os.path.join(work, "curve.jsonl")
        kproc = subprocess.Popen([KILN, "train", MODEL, "--data", train_txt, "--val", val_txt, "-D", f"T={CURVE_T}",
                                  "--batch", str(BATCH), "--steps", str(CURVE_STEPS), "--val-every", "50",
                                  "--val-batches", "8", "--save", ck, "--log", klog, "--threads", KILN_THREADS],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        model = TrainableGPT(init, TRAIN, LAYERS, HEADS)
        opt = model.optimizer()
        b = Batcher(train, CURVE_T, 1337)
        t_losses = []
        t0 = time.perf_counter()
        for s in range(CURVE_STEPS):
            x, y = b.next(BATCH)
            t_losses.append(torch_step(model, opt, x, y, lr_at(s, CURVE_STEPS)))
        t_curve_s = time.perf_counter() - t0
        kout, _ = kproc.communicate()
        if kproc.returncode != 0:
            print(kout, file=sys.stderr)
            sys.exit(1)
        k_losses = [json.loads(line)["loss"] for line in open(klog)]
        k_weights = {n: v for n, v in safetensors_np.read(ck).items() if n in init}
        t_weights = {n: v.detach().numpy() for n, v in model.w.items()}
        k_val, n_win = held_out_loss(k_weights, held, CURVE_T)
        t_val, _ = held_out_loss(t_weights, held, CURVE_T)
        k_eval = kiln("eval", MODEL, "--weights", ck, "--data", val_txt, "-D", f"T={CURVE_T}", "--batch", str(BATCH))

    print()
    print(f"char_gpt training, kiln --threads {KILN_THREADS}; torch {torch.__version__}; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"step time B={BATCH} T={STEP_T} (median of {len(k_all)} steps each): kiln {k_med:.3f} s "
          f"(min {min(k_all):.3f}), PyTorch {t_med:.3f} s (min {min(t_all):.3f}); "
          f"PyTorch / kiln = {t_med / k_med:.2f}x (PyTorch with OPENBLAS_NUM_THREADS={OPENBLAS_THREADS}, {threads()} threads)")

    def tenths(xs):
        return " ".join(f"{sum(xs[i:i + len(xs) // 10]) / (len(xs) // 10):.2f}"
                        for i in range(0, len(xs) - len(xs) // 10 + 1, len(xs) // 10))
    print(f"fortunes, {CURVE_STEPS} steps, batch {BATCH}, T={CURVE_T}, same initial weights, data order differs:")
    print(f"  training loss by tenths  kiln    {tenths(k_losses)}")
    print(f"  training loss by tenths  PyTorch {tenths(t_losses)}")
    print(f"  held-out loss ({n_win} windows of {CURVE_T}, same evaluation code): kiln {k_val:.4f}, PyTorch {t_val:.4f}, "
          f"kiln - PyTorch = {k_val - t_val:+.4f}")
    print("  kiln eval on the kiln checkpoint: " + ", ".join(l for l in k_eval.splitlines() if l.startswith("loss")))
    print(f"  (PyTorch's {CURVE_STEPS} steps took {t_curve_s:.0f} s while kiln trained alongside)")


if __name__ == "__main__":
    main()
