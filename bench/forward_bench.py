#!/usr/bin/python3
"""forward_bench.py KILN [SRCDIR] — the char_gpt forward pass: kiln compiled vs kiln --interp vs PyTorch.

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
alternating rounds and the best round's median of each is reported.
Not part of ctest. Needs python3-torch (Debian) and numpy.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["OMP_NUM_THREADS"] = "1"          # before torch is imported
os.environ["OPENBLAS_NUM_THREADS"] = "2"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

KILN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build/kiln"
SRC = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "scripts"))
import safetensors_np  # noqa: E402

MODEL = os.path.join(SRC, "examples", "char_gpt.json")
DIMS = ["-D", "B=1", "-D", "T=256"]
LAYERS, HEADS = 6, 6
ROUNDS = 3


def kiln(*args):
    out = subprocess.run([KILN, *args], check=True, capture_output=True, text=True)
    return out.stdout


KILN_THREADS = os.environ.get("KILN_THREADS", "1")    # kiln bench --threads
TORCH_THREADS = int(os.environ.get("TORCH_THREADS", "1"))  # torch.set_num_threads


def kiln_bench(*extra):
    return json.loads(kiln("bench", MODEL, *DIMS, "--json", "--threads", KILN_THREADS, *extra))


class CharGPT(torch.nn.Module):
    """examples/char_gpt.json written the way a PyTorch user would."""

    def __init__(self, w):
        super().__init__()
        self.w = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in w.items()}

    def linear(self, x, name):
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.w[name + ".weight"], self.w[name + ".bias"], 1e-5)

    def attn(self, x, name):
        B, T, D = x.shape
        dh = D // HEADS
        q, k, v = (self.linear(x, f"{name}.{p}").view(B, T, HEADS, dh).transpose(1, 2) for p in "qkv")
        scores = q @ k.transpose(-2, -1) / dh ** 0.5
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        p = scores.masked_fill(causal, float("-inf")).softmax(-1)
        return self.linear((p @ v).transpose(1, 2).reshape(B, T, D), f"{name}.o")

    def forward(self, tokens):
        T = tokens.shape[1]
        x = self.w["wte.weight"][tokens] + self.w["wpe.weight"][:T]
        for i in range(LAYERS):
            b = f"blocks.{i}"
            x = x + self.attn(self.ln(x, b + ".ln1"), b + ".attn")
            h = F.gelu(self.linear(self.ln(x, b + ".ln2"), b + ".ff.fc1"), approximate="tanh")
            x = x + self.linear(h, b + ".ff.fc2")
        return F.linear(self.ln(x, "ln_f"), self.w["wte.weight"])  # tied head


def torch_latency(model, tokens, seconds=2.0):
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
        model = CharGPT(weights)

        # 3. the same model: logits on fixed tokens
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 256, size=(1, 256)).astype("<i4")
        safetensors_np.write(x_path, {"tokens": tokens})
        kiln("run", MODEL, "--weights", w_path, "--inputs", x_path, "--out", y_path)
        kiln_logits = safetensors_np.read(y_path)["logits"]
        with torch.inference_mode():
            torch_logits = model(torch.from_numpy(tokens.astype(np.int64))).numpy()
        max_diff = float(np.abs(torch_logits - kiln_logits).max())
        scale = float(np.abs(kiln_logits).max())

        # 1. compile time, one process each
        compiles = sorted(kiln_bench("--iters", "1")["compile_ms"] for _ in range(5))
        stages = kiln_bench("--iters", "1")

        # 2. latency, kiln and PyTorch in alternating rounds
        kiln_rounds, torch_rounds = [], []
        t = torch.from_numpy(tokens.astype(np.int64))
        for _ in range(ROUNDS):
            kiln_rounds.append(kiln_bench())
            torch_rounds.append(torch_latency(model, t))
        interp = kiln_bench("--interp", "--iters", "3")

    best_kiln = min(kiln_rounds, key=lambda r: r["forward_ms_median"])
    best_torch = min(torch_rounds)
    flops = best_kiln["flops"]
    k_ms, i_ms, t_ms = best_kiln["forward_ms_median"], interp["forward_ms_median"], best_torch[0]

    print(f"char_gpt forward, B=1 T=256 ({flops / 1e9:.2f} GFLOP); kiln --threads {KILN_THREADS}, torch threads "
          f"{TORCH_THREADS} (OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=2, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}); torch {torch.__version__}")
    print(f"compile (model file -> entry point, JIT): median {compiles[len(compiles) // 2]:.0f} ms "
          f"(min {compiles[0]:.0f}, max {compiles[-1]:.0f}); stages of one: load {stages['load_ms']:.1f}, "
          f"plan+build {stages['build_ms']:.1f}, optimise {stages['optimize_ms']:.1f}, jit {stages['jit_ms']:.1f} ms")
    print(f"kiln compiled : {k_ms:9.2f} ms  ({flops / k_ms / 1e6:6.1f} GFLOP/s)   rounds: "
          + ", ".join(f"{r['forward_ms_median']:.1f}" for r in kiln_rounds))
    print(f"kiln --interp : {i_ms:9.2f} ms  ({flops / i_ms / 1e6:6.1f} GFLOP/s)")
    print(f"PyTorch       : {t_ms:9.2f} ms  ({flops / t_ms / 1e6:6.1f} GFLOP/s)   rounds: "
          + ", ".join(f"{r[0]:.1f}" for r in torch_rounds))
    print(f"ratios: interp/compiled {i_ms / k_ms:.1f}x, PyTorch/compiled {t_ms / k_ms:.2f}x")
    print(f"same model: max |logits_torch - logits_kiln| = {max_diff:.2e} (logits up to {scale:.2f})")
    if max_diff > 1e-3 * max(1.0, scale):
        print("MISMATCH: PyTorch and kiln disagree", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
