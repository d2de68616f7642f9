#!/usr/bin/python3
"""forward_bench.py KILN [SRCDIR] [--quick] — the char_gpt forward pass: kiln compiled vs kiln --interp vs PyTorch.

Measures, in one run on this machine:
  1. compile time: model file to callable entry point (JIT), `kiln bench --json`'s compile_ms,
     the median over several processes;
  2. forward latency of examples/char_gpt.json at B=1, T=256 — kiln compiled (`kiln bench`),
     kiln's reference interpreter (`kiln bench --interp`), and the same architecture in
     PyTorch with the same weights (loaded from the safetensors file `kiln init` wrote:
     embedding, learned positions, 6 pre-LN causal blocks with gelu_tanh, tied head) —
     and prints the ratios;
  3. that it is the same model: max |logits_torch - logits_kiln| on fixed tokens, kiln's
     logits from `kiln run`.

PyTorch runs single-threaded like kiln (OMP_NUM_THREADS=1, torch.set_num_threads(1)), in
inference mode. The machine may be shared: kiln's and PyTorch's latencies are measured in
alternating rounds (their order alternating too) and the best round's median of each is
reported. PyTorch runs in this process, and its OpenBLAS threads spin for ~0.1 s after its
passes: before each kiln run the script waits until this process is idle (bench/settle.py).
Needs python3-torch (Debian) and numpy; exits 77 (skipped) without torch. --quick (ctest's
smoke test): T=32, one round, short timings. bench/all.py is the side-by-side comparison
at PyTorch's best setting and 2 threads; this script is the one-thread view with compile
time and the interpreter.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["OMP_NUM_THREADS"] = "1"          # before torch is imported
os.environ["OPENBLAS_NUM_THREADS"] = "2"

QUICK = "--quick" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--quick"]
try:
    import numpy as np  # noqa: E402
    import torch  # noqa: E402
except ImportError as e:
    print(f"forward_bench: skipped, PyTorch is not available ({e}; apt-get install python3-torch)")
    sys.exit(77)

KILN = os.path.abspath(ARGS[0]) if len(ARGS) > 0 else "build/kiln"
SRC = os.path.abspath(ARGS[1]) if len(ARGS) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "scripts"))
sys.path.insert(0, os.path.join(SRC, "bench"))
import safetensors_np  # noqa: E402
import settle  # noqa: E402
from torch_gpt import CharGPT, model_shape  # noqa: E402

MODEL = os.path.join(SRC, "examples", "char_gpt.json")
T = 32 if QUICK else 256
DIMS = ["-D", "B=1", "-D", f"T={T}"]
ROUNDS = 1 if QUICK else 3


def kiln(*args):
    out = subprocess.run([KILN, *args], check=True, capture_output=True, text=True)
    return out.stdout


KILN_THREADS = os.environ.get("KILN_THREADS", "1")    # kiln bench --threads
TORCH_THREADS = int(os.environ.get("TORCH_THREADS", "1"))  # torch.set_num_threads


SETTLER = settle.Settler()


def kiln_bench(*extra):
    SETTLER.ran()  # PyTorch may have run in this process: always wait
    SETTLER.wait_idle([os.getpid()])  # its threads idle first
    return json.loads(kiln("bench", MODEL, *DIMS, "--json", "--threads", KILN_THREADS, *extra))


def torch_latency(model, tokens, seconds=0.2 if QUICK else 2.0):
    """Median and min of forward passes (ms) after one warm-up, for about `seconds`."""
    with torch.inference_mode():
        model(tokens)
        times, start = [], time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            model(tokens)
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], times[0]


def main():
    torch.set_num_threads(TORCH_THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        w_path, x_path, y_path = (os.path.join(tmp, f) for f in ("w.safetensors", "x.safetensors", "y.safetensors"))
        kiln("init", MODEL, "-o", w_path)
        weights = safetensors_np.read(w_path)
        layers, heads, _ = model_shape(MODEL)
        model = CharGPT(weights, layers, heads)

        # 3. the same model: logits on fixed tokens
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 256, size=(1, T)).astype("<i4")
        safetensors_np.write(x_path, {"tokens": tokens})
        kiln("run", MODEL, *DIMS, "--weights", w_path, "--inputs", x_path, "--out", y_path)
        kiln_logits = safetensors_np.read(y_path)["logits"]
        with torch.inference_mode():
            torch_logits = model(torch.from_numpy(tokens.astype(np.int64))).numpy()
        max_diff = float(np.abs(torch_logits - kiln_logits).max())
        scale = float(np.abs(kiln_logits).max())

        # 1. compile time, one process each
        runs = [kiln_bench("--iters", "1") for _ in range(1 if QUICK else 5)]
        compiles = sorted(r["compile_ms"] for r in runs)
        stages = runs[-1]

        # 2. latency, kiln and PyTorch in alternating rounds
        kiln_rounds, torch_rounds = [], []
        t = torch.from_numpy(tokens.astype(np.int64))
        for r in range(ROUNDS):
            for who in ("kiln", "torch") if r % 2 == 0 else ("torch", "kiln"):
                if who == "kiln":
                    kiln_rounds.append(kiln_bench(*(["--iters", "3"] if QUICK else [])))
                else:
                    torch_rounds.append(torch_latency(model, t))
        interp = kiln_bench("--interp", "--iters", "1" if QUICK else "3")

    best_kiln = min(kiln_rounds, key=lambda r: r["forward_ms_median"])
    best_torch = min(torch_rounds)
    flops = best_kiln["flops"]
    k_ms, i_ms, t_ms = best_kiln["forward_ms_median"], interp["forward_ms_median"], best_torch[0]

    print(f"char_gpt forward, B=1 T={T} ({flops / 1e9:.2f} GFLOP); kiln --threads {KILN_THREADS}, torch threads "
          f"{TORCH_THREADS} (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=2, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}); torch {torch.__version__}" + ("  [--quick]" if QUICK else ""))
    print(f"compile (model file -> entry point, JIT): median {compiles[len(compiles) // 2]:.0f} ms "
          f"(min {compiles[0]:.0f}, max {compiles[-1]:.0f}); stages of one: load {stages['load_ms']:.1f}, "
          f"plan+build {stages['build_ms']:.1f}, optimise {stages['optimize_ms']:.1f}, jit {stages['jit_ms']:.1f} ms")
    print(f"kiln compiled : {k_ms:9.2f} ms  ({flops / k_ms / 1e6:6.1f} GFLOP/s)   rounds: "
          + ", ".join(f"{r['forward_ms_median']:.1f}" for r in kiln_rounds))
    print(f"kiln --interp : {i_ms:9.2f} ms  ({flops / i_ms / 1e6:6.1f} GFLOP/s)")
    print(f"PyTorch       : {t_ms:9.2f} ms  ({flops / t_ms / 1e6:6.1f} GFLOP/s)   rounds: "
          + ", ".join(f"{r[0]:.1f}" for r in torch_rounds))
    print(f"ratios: interp/compiled {i_ms / k_ms:.1f}x, PyTorch/compiled {t_ms / k_ms:.2f}x")
    print(f"fairness: {settle.describe()} (here: this process, before each kiln run); kiln and PyTorch "
          f"alternate their order; {SETTLER.summary()}")
    print(f"same model: max |logits_torch - logits_kiln| = {max_diff:.2e} (logits up to {scale:.2f})")
    if max_diff > 1e-3 * max(1.0, scale):
        print("MISMATCH: PyTorch and kiln disagree", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
