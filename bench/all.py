#!/usr/bin/python3
"""all.py [BUILD_DIR] [--quick] [--only PARTS] [--json FILE] — every kiln benchmark against
its baselines, side by side, in one invocation; prints ratios.

  /usr/bin/python3 bench/all.py build            # the full run (~10 min on 2 busy cores)
  /usr/bin/python3 bench/all.py build --quick    # smoke test: small sizes, one round each

Parts (--only peak,train,forward,gemm,decode,memory; default all, in this order):
  peak     bench/fma_peak: the machine's FMA peak on 1 and 2 threads (GFLOP/s); every
           later figure is also given as a fraction of the peak at its thread count.
  train    the char_gpt training step (B=8, T=256): `kiln bench --train --threads 2` (and
           --threads 1, for information) against the same architecture in PyTorch
           (torch_gpt.py; AdamW with the model file's settings).
  forward  the char_gpt forward pass (B=1, T=256): `kiln bench` against PyTorch, with a
           check that both compute the same logits.
  gemm     bench/gemm_bench: SGEMM on the transformer shapes and squares, kiln against
           OpenBLAS (its fastest core type) and oneDNN at 1 and 2 threads, plain and with a
           bias+gelu epilogue (kiln fused against library GEMM + a separate pass).
  decode   bench/decode_bench.py: char_gpt generation at batch 1 — prefill latency of a
           256-token prompt and decode tokens/s, kiln against PyTorch with its own KV cache
           (its best setting, chosen as here), decode as a share of the memory-bandwidth
           limit (bench/decode_bandwidth), prefill against kiln's forward pass.
  memory   peak RSS (each process's own ru_maxrss) of `kiln train` for 3 char_gpt steps at
           B=8 T=256, with and without --checkpoint-activations, against PyTorch training
           the same architecture for 3 steps at the same batch (torch_memory.py); and the
           JIT compile time of the training step (`kiln bench --train`, median of 3).

Ratios are speed-ups: baseline time / kiln time (= kiln's tokens/s / the baseline's), so
> 1 means kiln is faster; the issue's targets are stated the same way.

PyTorch at its best setting: every combination of
  - ATen CPU capability: PyTorch 1.13's default (AVX2 kernels) and ATEN_CPU_CAPABILITY=avx512
    when the CPU has AVX-512 (one torch_worker.py process each: it is read once);
  - OpenBLAS core type (Debian's torch does its GEMMs in OpenBLAS): the environment's
    OPENBLAS_CORETYPE, unset (detected) and SkylakeX, the distinct ones (switched at run
    time inside the worker; see torch_worker.py);
  - torch threads 1 (OpenBLAS on 2 threads, i.e. OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=2)
    and torch threads 2 (OpenBLAS on 2)
is timed in a selection phase (settings interleaved, median step time each); the fastest
is then timed against kiln in interleaved rounds (kiln --threads 2 and PyTorch best, their
order alternating from round to round, then kiln --threads 1), and each figure is the
median of its rounds. The table names the setting that won.

Fairness between contenders (bench/settle.py): PyTorch's OpenBLAS and OpenMP threads spin
for ~0.1 s after each call, so before every timed block (a PyTorch call, or a kiln child
process) the bench waits until every PyTorch worker process is idle (its threads' CPU time
has stopped growing). kiln's figures come from child processes, which have exited, pool
and all, before anything else is timed. PyTorch keeps its best settings (its threads still
spin between its own passes, as they would for a user).

FLOPs: 6·N·tokens + full attention (12·layers·T²·d per sequence) for a training step and
2·N·tokens + 4·layers·T²·d per sequence for a forward pass, N = every parameter (the
issue's formula; causal blocks are counted although they can be skipped).

Needs: a build (BUILD_DIR with kiln, bench/fma_peak, bench/gemm_bench); PyTorch parts need
python3-torch (skipped, with a message, without it); gemm_bench's baselines need
libopenblas-dev / libdnnl-dev at build time (it says which it has).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "scripts"))
import safetensors_np  # noqa: E402
sys.path.insert(0, HERE)
import settle  # noqa: E402

MODEL = os.path.join(SRC, "examples", "char_gpt.json")


def log(*a):
    print(*a, flush=True)


def model_shape(path):
    """(layers, heads, d): as torch_gpt.model_shape, without importing torch."""
    with open(path) as f:
        m = json.load(f)
    layers = heads = d = 0
    for layer in m["layers"]:
        if layer["op"] == "embedding":
            d = layer["dim"]
        elif layer["op"] == "encoder_layer":
            layers += layer.get("repeat", 1)
            heads = layer["heads"]
    return layers, heads, d


def model_flops(n_params, layers, d, B, T, train):
    """6·N·tokens + 12·L·T²·d·B (train) or 2·N·tokens + 4·L·T²·d·B (forward)."""
    tokens = B * T
    if train:
        return 6 * n_params * tokens + 12 * layers * T * T * d * B
    return 2 * n_params * tokens + 4 * layers * T * T * d * B


def cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.kiln = os.path.join(self.build, "kiln")
        self.quick = args.quick
        self.threads = [t for t in (1, 2) if t <= (os.cpu_count() or 1)]
        # --quick: torch threads 1 only (with 2, a step on a busy machine can take seconds:
        # OpenBLAS's spinning workers and torch's OpenMP threads fight for the cores)
        self.torch_threads = [1] if self.quick else self.threads
        self.peak = {}  # threads -> GFLOP/s
        self.results = {"quick": self.quick}
        self.workers = None
        self.tmp = tempfile.TemporaryDirectory()
        self.settler = settle.Settler()

    def settle(self):
        """Before a timed block: wait until no PyTorch worker's threads are still spinning."""
        self.settler.wait_idle([w["proc"].pid for w in self.workers or []])

    # ---- helpers -----------------------------------------------------------------------

    def run(self, *cmd):
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def peak_pct(self, gflops, threads):
        p = self.peak.get(threads)
        return f"{100 * gflops / p:5.1f}%" if p else "   n/a"

    # ---- peak --------------------------------------------------------------------------

    def part_peak(self):
        log("== FMA peak (bench/fma_peak)")
        cmd = [os.path.join(self.build, "bench", "fma_peak"), "--json"] + (["--quick"] if self.quick else [])
        r = json.loads(self.run(*cmd, *map(str, self.threads)))
        self.peak = {int(t): g for t, g in r["gflops"].items()}
        for t, g in sorted(self.peak.items()):
            log(f"  {t} thread{'s' if t > 1 else ' '}: {g:7.1f} GFLOP/s  ({r['vector']}, best of many short runs)")
        self.results["peak"] = {"vector": r["vector"], "gflops": self.peak}

    # ---- PyTorch workers ---------------------------------------------------------------

    def start_workers(self):
        """One torch_worker.py per ATen capability; None when PyTorch is missing."""
        if self.workers is not None:
            return self.workers
        probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True)
        if probe.returncode != 0:
            log("  PyTorch: not available (python3-torch is not installed): comparison skipped")
            self.workers = []
            return self.workers
        caps = [None] + (["avx512"] if cpu_has_avx512() and not self.quick else [])
        env_core = os.environ.get("OPENBLAS_CORETYPE")
        requests = []
        for r in [env_core, None, "SkylakeX"]:
            if r not in requests:
                requests.append(r)
        self.workers = []
        for cap in caps:
            env = dict(os.environ)
            env.pop("ATEN_CPU_CAPABILITY", None)
            if cap:
                env["ATEN_CPU_CAPABILITY"] = cap
            env["OPENBLAS_NUM_THREADS"] = str(max(self.threads))  # the pool; calls choose how many
            p = subprocess.Popen([sys.executable, os.path.join(HERE, "torch_worker.py")], env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            w = {"proc": p, "cap": cap}
            hello = self.ask(w, {"cmd": "hello", "cores": requests})
            w.update(hello)
            self.workers.append(w)
        w0 = self.workers[0]
        log(f"  PyTorch {w0['torch']}; OpenBLAS: {w0['openblas']}")
        return self.workers

    def ask(self, w, cmd):
        self.settler.ran()  # the worker computes: wait for it to go idle before timing anything else
        w["proc"].stdin.write(json.dumps(cmd) + "\n")
        w["proc"].stdin.flush()
        line = w["proc"].stdout.readline()
        if not line:
            raise RuntimeError(f"torch_worker ({w['cap'] or 'default'} capability) died")
        return json.loads(line)

    def stop_workers(self):
        for w in self.workers or []:
            try:
                w["proc"].stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                w["proc"].stdin.close()
            except OSError:
                pass
            w["proc"].wait()

    def torch_settings(self):
        """Every (worker, core request, core name, torch threads) to try."""
        out = []
        for w in self.workers:
            cores = w["cores"] or [[None, "none"]]
            for req, name in cores:
                for t in self.torch_threads:
                    out.append({"worker": w, "core": req, "corename": name, "threads": t})
        return out

    @staticmethod
    def setting_label(s):
        cap = s["worker"]["capability"]
        core = f"OPENBLAS_CORETYPE={s['core']}" if s["core"] else "OPENBLAS_CORETYPE unset"
        return f"ATen {cap}, OpenBLAS {s['corename']} ({core}), torch threads {s['threads']}"

    def torch_time(self, s, warmup, iters):
        self.settle()
        r = self.ask(s["worker"], {"cmd": "time", "core": s["core"], "threads": s["threads"],
                                   "blas_threads": max(self.threads), "warmup": warmup, "iters": iters})
        return r["times"]

    # ---- the model comparisons ---------------------------------------------------------

    def kiln_time(self, B, T, train, threads, iters):
        """Median ms of one `kiln bench` process (it compiles, warms up once, runs iters)."""
        cmd = [self.kiln, "bench", MODEL, "-D", f"B={B}", "-D", f"T={T}", "--json", "--threads", str(threads),
               "--iters", str(iters)] + (["--train"] if train else [])
        self.settle()
        r = json.loads(self.run(*cmd))
        return r["step_ms_median" if train else "forward_ms_median"] / 1e3

    def part_model(self, train):
        what = "training step" if train else "forward pass"
        key = "train" if train else "forward"
        if train:
            B, T = (2, 32) if self.quick else (8, 256)
        else:
            B, T = (1, 32) if self.quick else (1, 256)
        layers, heads, d = model_shape(MODEL)
        weights = os.path.join(self.tmp.name, "init.safetensors")
        if not os.path.exists(weights):
            self.run(self.kiln, "init", MODEL, "-o", weights)
        n_params = sum(int(v.size) for v in safetensors_np.read(weights).values())
        flops = model_flops(n_params, layers, d, B, T, train)
        tokens = B * T
        log(f"\n== char_gpt {what}, B={B} T={T} ({tokens} tokens; {flops / 1e9:.2f} GFLOP = "
            f"{'6' if train else '2'}·N·tokens + full attention, N = {n_params / 1e6:.2f} M parameters)"
            + ("  [--quick: small sizes]" if self.quick else ""))
        res = {"B": B, "T": T, "flops": flops, "params": n_params}
        self.results[key] = res

        workers = self.start_workers()
        if workers:
            for w in workers:
                self.ask(w, {"cmd": "setup", "weights": weights, "model": MODEL, "B": B, "T": T, "train": train})
        if workers and not train:
            self.same_model(workers[0], weights, T)

        # 1. PyTorch's best setting
        best = None
        if workers:
            settings = self.torch_settings()
            sel_rounds = 1 if self.quick else 2
            if train:
                warm, iters = (1, 1) if self.quick else (1, 2)
            else:
                warm, iters = (1, 3) if self.quick else (2, 8)
            times = {i: [] for i in range(len(settings))}
            for _ in range(sel_rounds):
                for i, s in enumerate(settings):
                    times[i] += self.torch_time(s, warm, iters)
            log(f"  PyTorch settings ({sel_rounds} interleaved round(s) of {warm} untimed + {iters} timed "
                f"{'steps' if train else 'passes'} each; median)"
                + (": [--quick: default capability, torch threads 1 only]" if self.quick else ":"))
            for i, s in enumerate(settings):
                s["median"] = statistics.median(times[i])
            best = min(settings, key=lambda s: s["median"])
            for s in settings:
                log(f"    {s['median'] * 1e3:9.1f} ms  {self.setting_label(s)}{'   <- fastest' if s is best else ''}")
            res["torch_settings"] = [{"setting": self.setting_label(s), "ms": s["median"] * 1e3} for s in settings]

        # 2. kiln against that setting, interleaved
        rounds = 1 if self.quick else 3
        if train:
            k_iters, t_warm, t_iters, k1_iters = (2, 1, 2, 0) if self.quick else (4, 1, 4, 2)
        else:
            k_iters, t_warm, t_iters, k1_iters = (3, 1, 3, 0) if self.quick else (20, 2, 20, 10)
        main_t = max(self.threads)
        k_rounds, k1_rounds, t_rounds = [], [], []
        for r in range(rounds):
            # kiln and PyTorch in alternating order (each after a settle: see settle.py)
            for who in (("kiln", "torch") if r % 2 == 0 else ("torch", "kiln")):
                if who == "kiln":
                    k_rounds.append(self.kiln_time(B, T, train, main_t, k_iters))
                elif best:
                    t_rounds.append(statistics.median(self.torch_time(best, t_warm, t_iters)))
            if k1_iters and main_t > 1:
                k1_rounds.append(self.kiln_time(B, T, train, 1, k1_iters))
            log(f"  round {r + 1}: kiln --threads {main_t} {k_rounds[-1] * 1e3:.1f} ms"
                + (f", PyTorch {t_rounds[-1] * 1e3:.1f} ms" if t_rounds else "")
                + (f", kiln --threads 1 {k1_rounds[-1] * 1e3:.1f} ms" if k1_rounds else ""))

        def row(name, seconds, threads):
            g = flops / seconds / 1e9
            log(f"  {name:<34} {seconds * 1e3:10.1f} {tokens / seconds:11.0f} {g:9.1f}  {self.peak_pct(g, threads)}"
                f" of the {threads}-thread peak")
            return {"ms": seconds * 1e3, "tokens_per_s": tokens / seconds, "gflops": g,
                    "peak_fraction": g / self.peak[threads] if self.peak.get(threads) else None}

        log(f"  {'median of rounds':<34} {'ms':>10} {'tokens/s':>11} {'GFLOP/s':>9}")
        res["kiln"] = row(f"kiln --threads {main_t}", statistics.median(k_rounds), main_t)
        if k1_rounds:
            res["kiln_1thread"] = row("kiln --threads 1 (information)", statistics.median(k1_rounds), 1)
        elif main_t > 1:
            log("  kiln --threads 1: skipped (--quick)")
        if t_rounds:
            t_med = statistics.median(t_rounds)
            res["torch"] = row("PyTorch, fastest setting", t_med, main_t)
            res["torch"]["setting"] = self.setting_label(best)
            k_med = statistics.median(k_rounds)
            res["speedup"] = t_med / k_med
            log(f"  PyTorch's fastest setting: {self.setting_label(best)}")
            log(f"  speedup kiln / PyTorch = {res['speedup']:.2f}x  (PyTorch time / kiln time; > 1: kiln faster)")
            per_round = [t / k for t, k in zip(t_rounds, k_rounds)]
            res["speedup_rounds"] = per_round
            log("  the same in each round (kiln and PyTorch side by side): "
                + " ".join(f"{x:.2f}x" for x in per_round) + f"; median {statistics.median(per_round):.2f}x")

    def same_model(self, worker, weights, T):
        """kiln's logits and PyTorch's on the same tokens (fails the run if they differ)."""
        import numpy as np
        tokens = np.random.default_rng(0).integers(0, 256, size=(1, T)).astype("<i4")
        x = os.path.join(self.tmp.name, "x.safetensors")
        y = os.path.join(self.tmp.name, "y.safetensors")
        safetensors_np.write(x, {"tokens": tokens})
        self.run(self.kiln, "run", MODEL, "-D", "B=1", "-D", f"T={T}", "--weights", weights, "--inputs", x,
                 "--out", y)
        r = self.ask(worker, {"cmd": "check", "tokens": x, "logits": y})
        log(f"  same model: max |logits_torch - logits_kiln| = {r['max_diff']:.2e} (logits up to {r['scale']:.2f})")
        if not r["max_diff"] <= 1e-3 * max(1.0, r["scale"]):
            raise SystemExit("all.py: PyTorch and kiln compute different logits")

    # ---- GEMM --------------------------------------------------------------------------

    def part_gemm(self):
        log("\n== SGEMM (bench/gemm_bench)")
        out = os.path.join(self.tmp.name, "gemm.json")
        cmd = [os.path.join(self.build, "bench", "gemm_bench"), "--threads", ",".join(map(str, self.threads)),
               "--json", out]
        if self.peak:
            cmd += ["--peak", ",".join(f"{t}:{g}" for t, g in self.peak.items())]
        if self.quick:
            cmd.append("--quick")
        subprocess.run(cmd, check=True, stdout=sys.stdout, stderr=sys.stderr)
        with open(out) as f:
            self.results["gemm"] = json.load(f)

    # ---- memory and compile time -------------------------------------------------------

    def child_peak(self, cmd, env=None):
        """(exit status, stdout, stderr, peak RSS in MiB) of one child process: its own
        ru_maxrss from os.wait4, which, unlike RUSAGE_CHILDREN, is not the maximum over
        every child waited for so far."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            return p.returncode, out.read(), err.read(), ru.ru_maxrss / 1024  # KiB on Linux

    def part_memory(self):
        B, T = (2, 32) if self.quick else (8, 256)
        steps = 3
        main_t = max(self.threads)
        log(f"\n== memory: peak RSS of {steps} char_gpt training steps at B={B} T={T} (ru_maxrss of each "
            f"process, os.wait4), and the training step's JIT compile time"
            + ("  [--quick: small sizes]" if self.quick else ""))
        res = {"B": B, "T": T, "steps": steps}
        self.results["memory"] = res
        weights = os.path.join(self.tmp.name, "init.safetensors")
        if not os.path.exists(weights):
            self.run(self.kiln, "init", MODEL, "-o", weights)
        data = os.path.join(self.tmp.name, "memory.txt")
        with open(data, "w") as f:  # printable text, deterministic, a few batches' worth
            rng_state = 12345
            chars = []
            for _ in range(max(65536, 4 * B * (T + 1))):
                rng_state = (rng_state * 1103515245 + 12345) % 2**31
                chars.append(chr(32 + (rng_state >> 16) % 95))
            f.write("".join(chars))

        # kiln train, the same binary the user runs (fresh parameters from the model's seed)
        for ckpt in (False, True):
            cmd = [self.kiln, "train", MODEL, "--data", data, "--batch", str(B), "-D", f"T={T}",
                   "--steps", str(steps), "--threads", str(main_t)] + (["--checkpoint-activations"] if ckpt else [])
            rc, out, err, mib = self.child_peak(cmd)
            if rc != 0:
                raise SystemExit(f"all.py: {' '.join(cmd)} failed ({rc}):\n{err}")
            res["kiln_ckpt_mib" if ckpt else "kiln_mib"] = mib

        # PyTorch 1.13 training the same architecture (torch_memory.py): the training
        # part's fastest setting on this machine (ATen AVX-512 when the CPU has it,
        # OpenBLAS's detected core type, torch threads 1 with OpenBLAS on 2); thread
        # counts and core type barely move the peak.
        probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True)
        if probe.returncode != 0:
            log("  PyTorch: not available (python3-torch is not installed): comparison skipped")
        else:
            env = dict(os.environ)
            env.pop("ATEN_CPU_CAPABILITY", None)
            env.pop("OPENBLAS_CORETYPE", None)
            if cpu_has_avx512() and not self.quick:
                env["ATEN_CPU_CAPABILITY"] = "avx512"
            env["OMP_NUM_THREADS"] = "1"
            env["OPENBLAS_NUM_THREADS"] = str(main_t)
            setting = (f"ATen {'avx512' if 'ATEN_CPU_CAPABILITY' in env else 'default'}, OpenBLAS detected core "
                       f"type, torch threads 1, OpenBLAS threads {main_t}")
            res["torch_setting"] = setting
            # --quick: without the checkpointed run (information only)
            for ckpt in (False,) if self.quick else (False, True):
                cmd = [sys.executable, os.path.join(HERE, "torch_memory.py"), weights, MODEL, str(B), str(T),
                       str(steps)] + (["--checkpoint"] if ckpt else [])
                rc, out, err, mib = self.child_peak(cmd, env)
                if rc != 0:
                    raise SystemExit(f"all.py: torch_memory.py failed ({rc}):\n{err}")
                info = json.loads(out.strip().splitlines()[-1])
                res["torch_ckpt_mib" if ckpt else "torch_mib"] = mib
                res["torch_ckpt_info" if ckpt else "torch_info"] = info

        tm = res.get("torch_mib")

        def row(name, mib, note="", baseline=False):
            ratio = f"{mib / tm:6.2f}x PyTorch's" if tm and not baseline else ""
            log(f"  {name:<58} {mib:8.0f} MiB  {ratio}{note}")

        row(f"kiln train --threads {main_t}", res["kiln_mib"])
        row(f"kiln train --threads {main_t} --checkpoint-activations", res["kiln_ckpt_mib"])
        if tm:
            i = res["torch_info"]
            row(f"PyTorch {i['torch']}", tm, f"  (after `import torch` {i['after_import_mib']:.0f} MiB, with the "
                f"model and optimizer {i['after_model_mib']:.0f} MiB)", baseline=True)
            if "torch_ckpt_mib" in res:
                row("PyTorch, torch.utils.checkpoint around each block", res["torch_ckpt_mib"], "  (information)")
            log(f"  PyTorch's setting: {setting}")
            res["ratio"] = res["kiln_mib"] / tm
            res["ratio_ckpt"] = res["kiln_ckpt_mib"] / tm
            log(f"  ratios: kiln / PyTorch = {res['ratio']:.2f}x, with --checkpoint-activations "
                f"{res['ratio_ckpt']:.2f}x (both against PyTorch without checkpointing; < 1: kiln smaller)")

        # the JIT compile of the training step: `kiln bench --train` (model file to entry
        # point, one thread). Its wall time counts every wait for a core on a shared machine;
        # the compiling thread's CPU time is what it takes on a quiet one, and is what the
        # summary compares with the target.
        runs = 1 if self.quick else 3
        wall, cpu = [], []
        for _ in range(runs):
            r = json.loads(self.run(self.kiln, "bench", MODEL, "--train", "-D", f"B={B}", "-D", f"T={T}", "--json",
                                    "--threads", str(main_t), "--iters", "1"))
            wall.append(r["compile_ms"])
            cpu.append(r["compile_cpu_ms"])
            parts = (f"load {r['load_ms']:.0f}, plan+build {r['build_ms']:.0f}, optimise {r['optimize_ms']:.0f}, "
                     f"jit {r['jit_ms']:.0f} ms wall; {r['kernels']} kernels")
        res["compile_ms"] = statistics.median(wall)
        res["compile_cpu_ms"] = statistics.median(cpu)
        load = os.getloadavg()[0]
        log(f"  JIT compile of the training step (kiln bench --train, model file to entry point), median of {runs}: "
            f"{res['compile_cpu_ms']:.0f} ms of CPU ({', '.join(f'{c:.0f}' for c in cpu)}), {res['compile_ms']:.0f} ms "
            f"wall ({', '.join(f'{c:.0f}' for c in wall)}) at load average {load:.1f}; last: {parts}")

    # ---- summary -----------------------------------------------------------------------

    def summary(self):
        log("\n== summary (speedup = baseline time / kiln time; > 1: kiln faster)"
            + ("  [--quick: small sizes, not the targets' shapes]" if self.quick else ""))
        rows = []

        def add(what, value, target, fmt, at_most=False):
            shown = "n/a" if value is None else fmt.format(value)
            met = "" if value is None else ("met" if (value <= target if at_most else value >= target) else "missed")
            rows.append((what, shown, ("≤ " if at_most else "≥ ") + fmt.format(target), met))

        for key, name in (("train", "char_gpt training step"), ("forward", "char_gpt forward B=1")):
            r = self.results.get(key)
            if not r:
                continue
            add(f"{name} vs PyTorch's best", r.get("speedup"), 1.6, "{:.2f}x")
            if key == "train":
                add(f"{name}: share of the {max(self.threads)}-thread FMA peak", r["kiln"]["peak_fraction"], 0.6,
                    "{:.0%}")
        dec = self.results.get("decode")
        if dec:
            add("char_gpt decode tokens/s vs PyTorch's best (batch 1)", dec.get("decode_speedup"), 2.0, "{:.2f}x")
            add("char_gpt decode: share of the memory-bandwidth limit", dec["bandwidth_fraction"], 0.5, "{:.0%}")
            add("char_gpt prefill speed / forward pass speed (T=context)", dec["prefill_vs_forward"], 1.0, "{:.2f}")
        g = self.results.get("gemm")
        if g:
            for mode, target, name in (("plain", 1.0, "GEMM vs faster library"),
                                       ("bias_gelu", 1.1, "GEMM+bias+gelu fused vs library+pass")):
                for t in self.threads:
                    sp = [r["speedup"] for r in g["results"] if r["mode"] == mode and r["threads"] == t
                          and "speedup" in r]
                    label = f"{name}, {t} thread{'s' if t > 1 else ''}, worst shape"
                    if mode == "bias_gelu" and not g.get("epilogue_fused"):
                        rows.append((label, "n/a", f"≥ {target:.2f}x", "kiln fused epilogue not in this build"))
                        continue
                    add(label, min(sp) if sp else None, target, "{:.2f}x")
                    if sp:
                        geo = 1.0
                        for s in sp:
                            geo *= s
                        rows.append((f"  (geometric mean over {len(sp)} shapes)", f"{geo ** (1 / len(sp)):.2f}x", "", ""))
        mem = self.results.get("memory")
        if mem:
            add("peak RSS of kiln train / PyTorch's (same batch)", mem.get("ratio"), 0.4, "{:.2f}x", at_most=True)
            add("  the same, kiln with --checkpoint-activations", mem.get("ratio_ckpt"), 0.3, "{:.2f}x", at_most=True)
            add("JIT compile of the char_gpt training step (s of CPU)", mem["compile_cpu_ms"] / 1e3, 1.0, "{:.2f}",
                at_most=True)
        log(f"  {'':<58} {'measured':>9} {'target':>8}")
        for what, shown, target, met in rows:
            log(f"  {what:<58} {shown:>9} {target:>8}  {met}")
        self.results["summary"] = [{"what": w, "measured": s, "target": t, "status": m} for w, s, t, m in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build", help="the build directory (default: build)")
    ap.add_argument("--quick", action="store_true", help="small sizes and one round: a smoke test")
    ap.add_argument("--only", default="peak,train,forward,gemm,decode,memory", help="comma-separated parts")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    args = ap.parse_args()
    parts = args.only.split(",")
    for p in parts:
        if p not in ("peak", "train", "forward", "gemm", "decode", "memory"):
            ap.error(f"unknown part {p!r}")
    b = Bench(args)
    load = os.getloadavg()
    log(f"kiln benchmarks, {'quick' if args.quick else 'full'} run; {os.cpu_count()} CPUs; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    log(f"fairness: {settle.describe()}; kiln and PyTorch alternate their order from round to round")
    try:
        if "peak" in parts:
            b.part_peak()
        if "train" in parts:
            b.part_model(train=True)
        if "forward" in parts:
            b.part_model(train=False)
        if "gemm" in parts:
            b.part_gemm()
        if "decode" in parts:
            b.stop_workers()  # the decode part starts its own (decode_torch.py)
            b.workers = []
            import decode_bench
            b.results["decode"] = decode_bench.run(b.build, b.quick, b.settler)
        if "memory" in parts:
            b.part_memory()
    finally:
        b.stop_workers()
    b.summary()
    log(f"fairness, every part: {b.settler.summary()}")
    load = os.getloadavg()
    log(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b.results, f, indent=1)


if __name__ == "__main__":
    main()
