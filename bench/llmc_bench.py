#!/usr/bin/python3
"""llmc_bench.py BUILD_DIR [--llmc DIR] [--quick] [--rounds N] — the char_gpt training step,
kiln against llm.c's CPU trainer (karpathy/llm.c, train_gpt2.c) on the same weights and batch.

  LLMC_DIR=~/src/llm.c /usr/bin/python3 bench/llmc_bench.py build

llm.c is not shipped with kiln and not fetched by this script (CI has no network): give a
checkout of github.com/karpathy/llm.c with --llmc or LLMC_DIR. Without one the script says
so and exits 77 (ctest: skipped).

char_gpt (examples/char_gpt.json) is GPT-2's architecture at a smaller size — learned
positions, pre-LN blocks, fused-bias linears, gelu_tanh MLP of 4·d, final layernorm, the
head tied to the token embedding — which is exactly the model train_gpt2.c trains, so llm.c
runs it from a checkpoint in its own format:
  1. bench/llmc_driver.c is compiled against the checkout as llm.c's Makefile compiles
     train_gpt2.c (-Ofast -march=native -fopenmp -DOMP); it includes train_gpt2.c and
     calls its functions (forward, zero_grad, backward, AdamW update), nothing else;
  2. `kiln init` gives the weights; they are written in llm.c's order (wte, wpe, then per
     kind over the layers: ln1, qkv = q, k, v stacked, attention projection, ln2, fc, fc
     projection; then ln_f), vocabulary 256 (already a multiple of 128: no padding);
  3. the same batch (random tokens and targets, fixed seed) goes to both: the loss of
     llm.c's first forward pass must match the cross-entropy of `kiln run`'s logits (in
     float64) to 1e-4 relative, or the run fails — same model, same weights;
  4. timing: llm.c's step (forward, zero_grad, backward, update) built with each compiler
     found (cc, and clang as llm.c's Makefile prefers: clang-19 or clang, which needs
     libomp-dev for -fopenmp) at OMP_NUM_THREADS 1 and 2, the fastest of these settings
     kept (its best, printed), against `kiln bench --train --threads 2`, in interleaved rounds of alternating order; each figure the median of
     its steps after one untimed step, then the median over rounds.
kiln's step also clips the gradient norm (the model file's grad_clip), which llm.c's CPU
trainer does not do: a little more work on kiln's side.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "scripts"))
import safetensors_np  # noqa: E402

MODEL = os.path.join(SRC, "examples", "char_gpt.json")


def log(*a):
    print(*a, flush=True)


def model_config():
    m = json.load(open(MODEL))
    layers = {l["name"]: l for l in m["layers"]}
    blocks = layers["blocks"]
    return {"V": layers["wte"]["vocab"], "C": layers["wte"]["dim"], "maxT": layers["wpe"]["max_len"],
            "L": blocks["repeat"], "NH": blocks["heads"], "hidden": blocks["hidden"]}


def write_llmc_checkpoint(path, weights, cfg):
    """kiln's parameters in llm.c's checkpoint layout (train_gpt2.c, fill_in_parameter_sizes)."""
    V, C, L = cfg["V"], cfg["C"], cfg["L"]
    Vp = (V + 127) // 128 * 128
    w = weights

    def per_layer(fmt):
        return np.concatenate([np.asarray(w[fmt.format(i)], np.float32).ravel() for i in range(L)])

    def qkv(kind):
        return np.concatenate([np.concatenate([np.asarray(w[f"blocks.{i}.attn.{x}.{kind}"], np.float32).ravel()
                                               for x in "qkv"]) for i in range(L)])

    wte = np.zeros((Vp, C), np.float32)
    wte[:V] = w["wte.weight"]
    parts = [wte.ravel(), np.asarray(w["wpe.weight"], np.float32).ravel(),
             per_layer("blocks.{}.ln1.weight"), per_layer("blocks.{}.ln1.bias"),
             qkv("weight"), qkv("bias"),
             per_layer("blocks.{}.attn.o.weight"), per_layer("blocks.{}.attn.o.bias"),
             per_layer("blocks.{}.ln2.weight"), per_layer("blocks.{}.ln2.bias"),
             per_layer("blocks.{}.ff.fc1.weight"), per_layer("blocks.{}.ff.fc1.bias"),
             per_layer("blocks.{}.ff.fc2.weight"), per_layer("blocks.{}.ff.fc2.bias"),
             np.asarray(w["ln_f.weight"], np.float32).ravel(), np.asarray(w["ln_f.bias"], np.float32).ravel()]
    header = np.zeros(256, np.int32)
    header[:8] = [20240326, 3, cfg["maxT"], V, L, cfg["NH"], C, Vp]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for p in parts:
            f.write(p.astype("<f4").tobytes())


def cross_entropy(logits, targets):
    x = logits.astype(np.float64).reshape(-1, logits.shape[-1])
    t = targets.reshape(-1)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return float(np.mean(lse - x[np.arange(len(t)), t]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--llmc", default=os.environ.get("LLMC_DIR"), help="a checkout of karpathy/llm.c")
    ap.add_argument("--quick", action="store_true", help="B=2 T=32, one round: a smoke test")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not args.llmc or not os.path.exists(os.path.join(args.llmc, "train_gpt2.c")):
        log("llmc_bench: no llm.c checkout (give one with --llmc DIR or LLMC_DIR: a clone of "
            "github.com/karpathy/llm.c): skipped")
        return 77
    kiln = os.path.join(os.path.abspath(args.build), "kiln")
    cfg = model_config()
    if cfg["hidden"] != 4 * cfg["C"]:
        log("llmc_bench: llm.c's MLP is 4·d wide; examples/char_gpt.json's is not")
        return 1
    B, T = (2, 32) if args.quick else (8, 256)
    rounds = 1 if args.quick else args.rounds
    steps = 2 if args.quick else 4
    tmp = tempfile.TemporaryDirectory()
    td = tmp.name

    rev = subprocess.run(["git", "-C", args.llmc, "log", "-1", "--format=%h %cs"], capture_output=True,
                         text=True).stdout.strip() or "not a git checkout"
    # llm.c's Makefile: CFLAGS = -Ofast …, -march=native when it works, -fopenmp -DOMP
    flags = ["-Ofast", "-march=native", "-fopenmp", "-DOMP", "-Wno-unused-result"]
    drivers = {}
    for cc in dict.fromkeys([os.environ.get("CC", "cc"), "clang-19", "clang"]):
        exe = os.path.join(td, "llmc_driver_" + cc.replace("/", "_"))
        r = subprocess.run([cc] + flags + ["-I", args.llmc, os.path.join(HERE, "llmc_driver.c"), "-lm", "-o", exe],
                           capture_output=True, text=True) if shutil.which(cc) else None
        if r is not None and r.returncode == 0:
            drivers[cc] = exe
        elif cc != "clang" or "clang-19" not in drivers:
            log(f"llm.c with {cc}: " + ("not installed" if r is None else "does not build (clang needs libomp-dev "
                                         "for -fopenmp): " + (r.stderr.strip().splitlines() or ["?"])[-1]))
    if not drivers:
        log("llmc_bench: train_gpt2.c does not build with any compiler here")
        return 1
    if "clang-19" in drivers:
        drivers.pop("clang", None)  # the same compiler, usually
    log(f"llm.c: {args.llmc} ({rev}), train_gpt2.c built with {', '.join(drivers)}: {' '.join(flags)}")

    weights = os.path.join(td, "init.safetensors")
    subprocess.run([kiln, "init", MODEL, "-o", weights], check=True, capture_output=True)
    w = safetensors_np.read(weights)
    ckpt = os.path.join(td, "char_gpt_llmc.bin")
    write_llmc_checkpoint(ckpt, w, cfg)
    n_params = sum(int(v.size) for v in w.values())

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg["V"], size=(B, T)).astype("<i4")
    targets = rng.integers(0, cfg["V"], size=(B, T)).astype("<i4")
    tok_file = os.path.join(td, "tokens.bin")
    with open(tok_file, "wb") as f:
        f.write(tokens.tobytes() + targets.tobytes())

    # the same model: llm.c's first loss against kiln's logits on the same batch
    x = os.path.join(td, "x.safetensors")
    y = os.path.join(td, "y.safetensors")
    safetensors_np.write(x, {"tokens": tokens, "targets": targets})
    subprocess.run([kiln, "run", MODEL, "-D", f"B={B}", "-D", f"T={T}", "--weights", weights, "--inputs", x,
                    "--out", y], check=True, capture_output=True)
    kiln_loss = cross_entropy(safetensors_np.read(y)["logits"], targets)

    def llmc(setting, n_steps):
        cc, threads = setting
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        out = subprocess.run([drivers[cc], ckpt, tok_file, str(B), str(T), str(n_steps), "3e-4"], env=env, check=True,
                             capture_output=True, text=True).stdout
        loss = float(next(l.split()[1] for l in out.splitlines() if l.startswith("loss ")))
        times = [float(l.split()[2]) / 1e3 for l in out.splitlines() if l.startswith("step ")]
        return loss, times

    llmc_loss, _ = llmc((next(iter(drivers)), 1), 0)
    rel = abs(llmc_loss - kiln_loss) / abs(kiln_loss)
    log(f"same model: initial loss on one batch ({B}x{T} random tokens): llm.c {llmc_loss:.6f}, "
        f"kiln {kiln_loss:.6f} (float64 from its logits), relative difference {rel:.1e}")
    if rel > 1e-4:
        log("llmc_bench: llm.c and kiln disagree on the loss: not the same model (see the checkpoint order)")
        return 1

    tokens_n = B * T
    flops = 6 * n_params * tokens_n + 12 * cfg["L"] * T * T * cfg["C"] * B
    log(f"\n== char_gpt training step, B={B} T={T} ({tokens_n} tokens; {flops / 1e9:.2f} GFLOP = "
        f"6·N·tokens + full attention, N = {n_params / 1e6:.2f} M)" + ("  [--quick: small sizes]" if args.quick else ""))

    # llm.c's best setting
    settings = {}
    for cc in drivers:
        for th in (1, 2):
            _, times = llmc((cc, th), steps)
            settings[cc, th] = statistics.median(times[1:]) if len(times) > 1 else times[0]
            log(f"  llm.c ({cc}) OMP_NUM_THREADS={th}: {settings[cc, th] * 1e3:9.1f} ms per step (median of "
                f"{len(times) - 1} after 1 untimed)")
    best = min(settings, key=settings.get)
    best_name = f"llm.c ({best[0]}) OMP_NUM_THREADS={best[1]}"
    log(f"  llm.c's fastest setting: {best_name}")

    def kiln_step():
        out = subprocess.run([kiln, "bench", MODEL, "--train", "-D", f"B={B}", "-D", f"T={T}", "--json",
                              "--threads", "2", "--iters", str(steps)], check=True, capture_output=True,
                             text=True).stdout
        return json.loads(out)["step_ms_median"] / 1e3

    k_rounds, l_rounds = [], []
    for r in range(rounds):
        for who in (("kiln", "llmc") if r % 2 == 0 else ("llmc", "kiln")):
            if who == "kiln":
                k_rounds.append(kiln_step())
            else:
                _, times = llmc(best, steps)
                l_rounds.append(statistics.median(times[1:]) if len(times) > 1 else times[0])
        log(f"  round {r + 1}: kiln --threads 2 {k_rounds[-1] * 1e3:.1f} ms, llm.c {l_rounds[-1] * 1e3:.1f} ms")
    k, l = statistics.median(k_rounds), statistics.median(l_rounds)
    log(f"  {'median of rounds':<30} {'ms':>9} {'tokens/s':>10} {'GFLOP/s':>9}")
    for name, s in (("kiln --threads 2", k), (best_name, l)):
        log(f"  {name:<30} {s * 1e3:9.1f} {tokens_n / s:10.0f} {flops / s / 1e9:9.1f}")
    log(f"  speedup kiln / llm.c = {l / k:.2f}x  (llm.c time / kiln time; > 1: kiln faster); per round "
        + " ".join(f"{a / b:.2f}x" for a, b in zip(l_rounds, k_rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
