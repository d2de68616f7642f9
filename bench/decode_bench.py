#!/usr/bin/python3
"""decode_bench.py [BUILD_DIR] [--quick] [--json FILE] — batch-1 generation with char_gpt:
kiln's KV-cached prefill and decode step against PyTorch 1.13 with its own KV cache, and
decode as a fraction of the memory-bandwidth limit. Prints ratios.

  /usr/bin/python3 bench/decode_bench.py build            # full run (a few minutes)
  /usr/bin/python3 bench/decode_bench.py build --quick    # smoke test: context 64, one round

Also part `decode` of bench/all.py. What it measures (examples/char_gpt.json, fresh weights
from `kiln init`, batch 1, the context = the model's 256 positions, --quick 64):

  prefill  the latency of processing a prompt that fills the context (256 tokens):
           `kiln generate --stats` (the compiled prefill) against PyTorch's prefill, and
           against kiln's own forward pass at B=1 T=256 (`kiln bench`), which computes
           every row's logits (the prefill writes the cache, and after the last attention
           works on the prompt's last row only): the target is prefill as fast as the forward.
  decode   tokens/s of greedy decoding from a 32-token prompt to the end of the context
           (224 decode steps, every one a full step: sampling included, nothing printed):
           kiln's compiled decode step against PyTorch's cached step. Target ≥ 2×.
  limit    decode against the memory-bandwidth limit: the bytes one step must read (every
           weight once: the layers' matrices and biases, the tied embedding as the head, one
           row of the position table; and the cache's keys and values of the positions so far,
           averaged over the decoded positions) divided by the read bandwidth that
           bench/decode_bandwidth measures at the same thread count. Target ≥ 50 %.

PyTorch (bench/decode_torch.py: torch_gpt.CharGPT plus a preallocated cache written in
place, under inference_mode) at its best setting, chosen as all.py chooses it for training:
every ATen capability (default, and avx512 when the CPU has it) × OpenBLAS core type (the
environment's, unset = detected, SkylakeX, Haswell: the distinct ones) × torch threads 1
and 2 is timed in a selection phase, interleaved, separately for decode (48 steps from the
prompt, to rank them) and for prefill;
the fastest of each is then timed against kiln in interleaved rounds. --quick tries the
default capability at torch threads 1 only. The two compute the same model: kiln's greedy
continuation, replayed through PyTorch's cache, gets the same log-probabilities (checked).

kiln runs with --threads 2 (the figures) and --threads 1 (for information). Each kiln
figure is the median of `kiln generate --repeat` runs inside one process; each round is a
new process (it compiles the prefill and the step first: not timed).

Fairness (bench/settle.py): before every timed block — a PyTorch call or a kiln process —
the bench waits until the PyTorch workers' threads have stopped spinning (OpenBLAS and
OpenMP keep running for ~0.1 s after a call). kiln and PyTorch alternate their order from
round to round. The two kiln figures compared with each other, the prefill and the
forward pass, are timed adjacently in every round, in alternating order, at both thread
counts, with the same statistic: `kiln generate --repeat R+1` (its median counts the
first, cold prefill, which is the slowest) against `kiln bench --iters R` (one untimed
warm-up), R even, both the (R/2+1)-th fastest of R warm runs; prefill / forward is the
median of the rounds' own ratios.
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
START = 32  # decode from a prompt of this many tokens to the end of the context


def log(*a):
    print(*a, flush=True)


def cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


def model_shape(path):
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


class DecodeBench:
    def __init__(self, build, quick, tmp, settler=None):
        self.build = os.path.abspath(build)
        self.kiln = os.path.join(self.build, "kiln")
        self.quick = quick
        self.tmp = tmp
        self.threads = [t for t in (1, 2) if t <= (os.cpu_count() or 1)]
        self.torch_threads = [1] if quick else self.threads
        self.context = 64 if quick else 256
        self.start = 16 if quick else START
        self.workers = None
        self.res = {"quick": quick, "context": self.context, "start": self.start}
        self.settler = settler or settle.Settler()

    def settle(self):
        """Before a timed block: wait until no PyTorch worker's threads are still spinning."""
        self.settler.wait_idle([w["proc"].pid for w in self.workers or []])

    def run(self, *cmd):
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    # ---- kiln ----------------------------------------------------------------------

    def kiln_generate(self, prompt_len, max_new, threads, repeat):
        prompt = "".join(chr(ord("a") + i % 26) for i in range(prompt_len))
        self.settle()
        out = self.run(self.kiln, "generate", MODEL, "--weights", self.weights, "-D", f"T={self.context}",
                       "--prompt", prompt, "--max-new", str(max_new), "--greedy", "--json", "--stats",
                       "--repeat", str(repeat), "--threads", str(threads))
        return json.loads(out)

    def kiln_decode(self, threads, repeat):
        """Seconds per decode step (median of repeat runs of context - start steps)."""
        r = self.kiln_generate(self.start, self.context - self.start + 1, threads, repeat)
        assert r["decode_steps"] == self.context - self.start, r["decode_steps"]
        return r["decode_ms"] / 1e3 / r["decode_steps"], r

    def kiln_prefill(self, threads, repeat):
        r = self.kiln_generate(self.context, 1, threads, repeat)
        return r["prefill_ms"] / 1e3

    def kiln_forward(self, threads, iters):
        self.settle()
        r = json.loads(self.run(self.kiln, "bench", MODEL, "-D", "B=1", "-D", f"T={self.context}", "--json",
                                "--threads", str(threads), "--iters", str(iters)))
        return r["forward_ms_median"] / 1e3

    # ---- PyTorch -------------------------------------------------------------------

    def start_workers(self):
        probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True)
        if probe.returncode != 0:
            log("  PyTorch: not available (python3-torch is not installed): comparison skipped")
            self.workers = []
            return
        caps = [None] + (["avx512"] if cpu_has_avx512() and not self.quick else [])
        env_core = os.environ.get("OPENBLAS_CORETYPE")
        requests = []
        for r in [env_core, None, "SkylakeX", "Haswell"]:
            if r not in requests:
                requests.append(r)
        self.workers = []
        for cap in caps:
            env = dict(os.environ)
            env.pop("ATEN_CPU_CAPABILITY", None)
            if cap:
                env["ATEN_CPU_CAPABILITY"] = cap
            env["OPENBLAS_NUM_THREADS"] = str(max(self.threads))
            p = subprocess.Popen([sys.executable, os.path.join(HERE, "decode_torch.py")], env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            w = {"proc": p, "cap": cap}
            w.update(self.ask(w, {"cmd": "hello", "cores": requests}))
            self.ask(w, {"cmd": "setup", "weights": self.weights, "model": MODEL, "context": self.context})
            self.workers.append(w)
        log(f"  PyTorch {self.workers[0]['torch']}; OpenBLAS: {self.workers[0]['openblas']}")

    def ask(self, w, cmd):
        self.settler.ran()  # the worker computes: wait for it to go idle before timing anything else
        w["proc"].stdin.write(json.dumps(cmd) + "\n")
        w["proc"].stdin.flush()
        line = w["proc"].stdout.readline()
        if not line:
            raise RuntimeError(f"decode_torch.py ({w['cap'] or 'default'} capability) died")
        return json.loads(line)

    def stop_workers(self):
        for w in self.workers or []:
            try:
                w["proc"].stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                w["proc"].stdin.close()
            except OSError:
                pass
            w["proc"].wait()

    def settings(self):
        out = []
        for w in self.workers:
            for req, name in (w["cores"] or [[None, "none"]]):
                for t in self.torch_threads:
                    out.append({"worker": w, "core": req, "corename": name, "threads": t})
        return out

    @staticmethod
    def label(s):
        core = f"OPENBLAS_CORETYPE={s['core']}" if s["core"] else "OPENBLAS_CORETYPE unset"
        return f"ATen {s['worker']['capability']}, OpenBLAS {s['corename']} ({core}), torch threads {s['threads']}"

    def torch_decode(self, s, iters, steps=None):
        """Seconds per decode step: median over iters runs of `steps` steps from the start
        (default: to the end of the context)."""
        steps = steps or self.context - self.start
        self.settle()
        r = self.ask(s["worker"], {"cmd": "time_decode", "core": s["core"], "threads": s["threads"],
                                   "blas_threads": max(self.threads), "warmup": 1, "iters": iters,
                                   "start": self.start, "steps": steps})
        return statistics.median(r["times"]) / steps

    def torch_prefill(self, s, iters):
        self.settle()
        r = self.ask(s["worker"], {"cmd": "time_prefill", "core": s["core"], "threads": s["threads"],
                                   "blas_threads": max(self.threads), "warmup": 1, "iters": iters,
                                   "n": self.context})
        return statistics.median(r["times"])

    def select(self, what, fn, iters, rounds):
        settings = self.settings()
        times = {i: [] for i in range(len(settings))}
        for _ in range(rounds):
            for i, s in enumerate(settings):
                times[i].append(fn(s, iters))
        for i, s in enumerate(settings):
            s["median"] = statistics.median(times[i])
        best = min(settings, key=lambda s: s["median"])
        unit = "ms per step" if what == "decode" else "ms"
        log(f"  PyTorch {what} settings (median of {rounds} interleaved round(s) of {iters} timed runs):")
        for s in settings:
            log(f"    {s['median'] * 1e3:9.3f} {unit}  {self.label(s)}{'   <- fastest' if s is best else ''}")
        self.res[f"torch_{what}_settings"] = [{"setting": self.label(s), "s": s["median"]} for s in settings]
        return best

    # ---- the run -------------------------------------------------------------------

    def bandwidth(self):
        cmd = [os.path.join(self.build, "bench", "decode_bandwidth"), "--json"] + (["--quick"] if self.quick else [])
        r = json.loads(self.run(*cmd, *map(str, self.threads)))
        self.bw = {int(t): g * 1e9 for t, g in r["gbs"].items()}
        for t, b in sorted(self.bw.items()):
            log(f"  read bandwidth, {t} thread{'s' if t > 1 else ' '}: {b / 1e9:6.2f} GB/s "
                f"({r['mib']} MiB streamed, best of {r['passes']} passes: bench/decode_bandwidth)")
        self.res["bandwidth_gbs"] = {t: b / 1e9 for t, b in self.bw.items()}

    def bytes_per_step(self):
        """Bytes one decode step must read, averaged over the decoded positions."""
        w = safetensors_np.read(self.weights)
        layers, heads, d = model_shape(MODEL)
        n = sum(int(v.size) for v in w.values())
        wpe = w.get("wpe.weight")
        n_read = n - (int(wpe.size) - int(wpe.shape[1]) if wpe is not None else 0)  # one position row
        positions = range(self.start, self.context)  # step at pos reads keys/values 0..pos
        cache = statistics.mean(2 * layers * (p + 1) * d * 4 for p in positions)
        self.res.update({"params": n, "weight_bytes": 4 * n_read, "cache_bytes_mean": cache})
        return 4 * n_read + cache

    def check_same(self, kiln_run):
        if not self.workers:
            return
        ids = [ord(c) for c in kiln_run["prompt"]] + kiln_run["ids"]
        r = self.ask(self.workers[0], {"cmd": "check", "ids": ids, "n_prompt": kiln_run["prompt_tokens"],
                                       "logprobs": kiln_run["logprobs"]})
        log(f"  same model: kiln's greedy tokens replayed through PyTorch's cache: max |logprob difference| = "
            f"{r['max_diff']:.2e}; PyTorch's cached step vs its full forward: {r['step_vs_full']:.2e}")
        self.res["check"] = r
        if not (r["max_diff"] <= 1e-3 and r["step_vs_full"] <= 1e-3):
            raise SystemExit("decode_bench.py: PyTorch and kiln generate differently")

    def main(self):
        log(f"\n== char_gpt generation, batch 1, context {self.context}: prefill of {self.context} tokens, "
            f"decode from {self.start} to {self.context}" + ("  [--quick: short context]" if self.quick else ""))
        log(f"  fairness: {settle.describe()}; kiln and PyTorch alternate their order from round to round; "
            f"kiln's prefill and forward pass are timed side by side in every round, in alternating order, "
            f"with the same statistic")
        self.weights = os.path.join(self.tmp, "decode_init.safetensors")
        self.run(self.kiln, "init", MODEL, "-o", self.weights)
        self.bandwidth()
        step_bytes = self.bytes_per_step()
        log(f"  one decode step reads {step_bytes / 1e6:.1f} MB: weights {self.res['weight_bytes'] / 1e6:.1f} MB "
            f"({self.res['params'] / 1e6:.2f} M parameters) + keys and values "
            f"{self.res['cache_bytes_mean'] / 1e6:.2f} MB on average")
        self.start_workers()
        main_t = max(self.threads)
        repeat = 2 if self.quick else 3
        t_iters = 1 if self.quick else 3
        best_dec = best_pre = None
        if self.workers:
            # the selection decodes a shorter stretch (48 steps from the start): it only ranks
            best_dec = self.select("decode", lambda s, i: self.torch_decode(s, i, min(48, self.context - self.start)),
                                   2, 1 if self.quick else 2)
            best_pre = self.select("prefill", self.torch_prefill, 2, 1)
        rounds = 1 if self.quick else 3
        R = 2 if self.quick else 10  # warm runs behind each prefill and forward figure (even: see the docstring)
        pf_threads = [main_t] if self.quick else sorted(self.threads, reverse=True)
        k_dec, k1_dec, t_dec, t_pre = [], [], [], []
        pf = {t: {"prefill": [], "forward": []} for t in pf_threads}
        for r in range(rounds):
            even = r % 2 == 0
            # decode: kiln and PyTorch in alternating order
            for who in (("kiln", "torch") if even else ("torch", "kiln")):
                if who == "kiln":
                    step_s, run = self.kiln_decode(main_t, repeat)
                    k_dec.append(step_s)
                    if r == 0:
                        self.check_same(run)
                elif best_dec:
                    t_dec.append(self.torch_decode(best_dec, t_iters))
            # kiln's prefill and forward pass side by side (alternating order), at each thread
            # count; PyTorch's prefill before or after them, alternately
            if best_pre and not even:
                t_pre.append(self.torch_prefill(best_pre, 3))
            for t in pf_threads:
                for what in (("prefill", "forward") if even else ("forward", "prefill")):
                    pf[t][what].append(self.kiln_prefill(t, R + 1) if what == "prefill" else self.kiln_forward(t, R))
            if best_pre and even:
                t_pre.append(self.torch_prefill(best_pre, 3))
            if not self.quick and main_t > 1 and r == 0:
                k1_dec.append(self.kiln_decode(1, repeat)[0])
            log(f"  round {r + 1}: kiln decode {1 / k_dec[-1]:.0f} tokens/s"
                + "".join(f"; --threads {t} prefill {pf[t]['prefill'][-1] * 1e3:.1f} ms, forward "
                          f"{pf[t]['forward'][-1] * 1e3:.1f} ms" for t in pf_threads)
                + (f"; PyTorch decode {1 / t_dec[-1]:.0f} tokens/s, prefill {t_pre[-1] * 1e3:.1f} ms" if t_dec else "")
                + (f"; kiln --threads 1 decode {1 / k1_dec[-1]:.0f} tokens/s" if k1_dec else ""))
        med = statistics.median
        res = self.res
        k_pre, k_fwd = pf[main_t]["prefill"], pf[main_t]["forward"]
        res["kiln"] = {"threads": main_t, "decode_tokens_per_s": 1 / med(k_dec), "prefill_ms": med(k_pre) * 1e3,
                       "forward_ms": med(k_fwd) * 1e3}
        limit = self.bw[main_t] / step_bytes
        res["limit_tokens_per_s"] = limit
        res["bandwidth_fraction"] = (1 / med(k_dec)) / limit
        # prefill speed / forward speed: the median of each round's own ratio (the two ran
        # next to each other, so a load change between rounds cancels)
        pvf = {t: [f / p for p, f in zip(pf[t]["prefill"], pf[t]["forward"])] for t in pf_threads}
        res["prefill_vs_forward"] = med(pvf[main_t])
        res["prefill_vs_forward_rounds"] = {t: {"prefill_ms": [x * 1e3 for x in pf[t]["prefill"]],
                                                "forward_ms": [x * 1e3 for x in pf[t]["forward"]],
                                                "ratio": pvf[t], "ratio_median": med(pvf[t])} for t in pf_threads}
        log(f"  {'median of rounds':<40} {'decode tokens/s':>16} {'prefill ms':>11}")
        log(f"  {'kiln --threads ' + str(main_t):<40} {1 / med(k_dec):16.0f} {med(k_pre) * 1e3:11.1f}")
        if k1_dec:
            res["kiln_1thread"] = {"decode_tokens_per_s": 1 / med(k1_dec)}
            line = f"  {'kiln --threads 1 (information)':<40} {1 / med(k1_dec):16.0f}"
            if 1 in pf:
                res["kiln_1thread"].update({"prefill_ms": med(pf[1]["prefill"]) * 1e3,
                                            "forward_ms": med(pf[1]["forward"]) * 1e3})
                line += f" {med(pf[1]['prefill']) * 1e3:11.1f}"
            log(line)
        if t_dec:
            res["torch"] = {"decode_tokens_per_s": 1 / med(t_dec), "prefill_ms": med(t_pre) * 1e3,
                            "decode_setting": self.label(best_dec), "prefill_setting": self.label(best_pre)}
            res["decode_speedup"] = med(t_dec) / med(k_dec)
            res["prefill_speedup"] = med(t_pre) / med(k_pre)
            log(f"  {'PyTorch, fastest setting':<40} {1 / med(t_dec):16.0f} {med(t_pre) * 1e3:11.1f}")
            log(f"  PyTorch's fastest decode setting: {self.label(best_dec)}")
            log(f"  PyTorch's fastest prefill setting: {self.label(best_pre)}")
        log(f"  kiln prefill against its forward pass B=1 T={self.context} (side by side in each round, "
            f"alternating order; each the median of {R} warm runs):")
        for t in pf_threads:
            log(f"    --threads {t}: prefill {med(pf[t]['prefill']) * 1e3:.1f} ms, forward "
                f"{med(pf[t]['forward']) * 1e3:.1f} ms (medians of rounds); forward / prefill per round "
                + " ".join(f"{x:.2f}" for x in pvf[t]) + f", median {med(pvf[t]):.2f}")
        log(f"  bandwidth limit at {main_t} threads: {limit:.0f} tokens/s "
            f"({self.bw[main_t] / 1e9:.2f} GB/s / {step_bytes / 1e6:.1f} MB per step)")
        log("  ratios: "
            + (f"decode speedup kiln / PyTorch = {res['decode_speedup']:.2f}x (target >= 2); "
               f"prefill speedup = {res['prefill_speedup']:.2f}x; " if t_dec else "")
            + f"decode = {res['bandwidth_fraction']:.0%} of the bandwidth limit (target >= 50%); "
            f"prefill speed / forward speed = {res['prefill_vs_forward']:.2f} (target >= 1)")
        log(f"  fairness: {self.settler.summary()}")
        return res


def run(build, quick, settler=None):
    """all.py's part `decode`: the results dict (settler: all.py's, to count its waits)."""
    with tempfile.TemporaryDirectory() as tmp:
        b = DecodeBench(build, quick, tmp, settler)
        try:
            return b.main()
        finally:
            b.stop_workers()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?", default="build", help="the build directory (default: build)")
    ap.add_argument("--quick", action="store_true", help="context 64, one round: a smoke test")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    args = ap.parse_args()
    load = os.getloadavg()
    log(f"decode_bench: {os.cpu_count()} CPUs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    res = run(args.build, args.quick)
    load = os.getloadavg()
    log(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
