#!/usr/bin/python3
"""torch_worker.py — PyTorch's side of bench/all.py: one process per ATen CPU capability.

all.py starts this with ATEN_CPU_CAPABILITY set or not (PyTorch 1.13 reads it once, at the
first dispatch, and by default uses its AVX2 kernels even on AVX-512 machines) and sends
one JSON command per line on stdin; every answer is one JSON line on stdout:

  {"cmd": "hello", "cores": [REQUEST, ...]}  -> torch version, ATen capability, OpenBLAS
        config, and the distinct OpenBLAS core types among the requests (REQUEST: an
        OPENBLAS_CORETYPE value, or null = unset, i.e. detected), as [[request, corename]]
  {"cmd": "setup", "weights": PATH, "model": PATH, "B": b, "T": t, "train": bool}
  {"cmd": "time", "core": REQUEST, "threads": n, "blas_threads": m, "warmup": w, "iters": k}
        -> {"times": [seconds, ...]}: k forward passes (inference mode) or training steps
        after w untimed ones, with that OpenBLAS core, torch.set_num_threads(n) and
        openblas_set_num_threads(m)
  {"cmd": "check", "tokens": PATH, "logits": PATH}
        -> {"max_diff", "scale"}: the forward model's logits on the tokens of one
        safetensors file against kiln's in another (`kiln run`'s output)
  {"cmd": "quit"}

Switching settings inside one process is what lets all.py interleave them. Debian's torch
does its GEMMs in OpenBLAS (libblas.so.3 is a thin wrapper over the same libopenblas.so.0);
a DYNAMIC_ARCH OpenBLAS picks its kernels when loaded (OPENBLAS_CORETYPE, else the CPU it
detects), and its exported gotoblas_dynamic_quit / gotoblas_dynamic_init redo that choice,
which is how the core type changes here (openblas_get_corename confirms it). torch threads
set the intra-op OpenMP pool (what OMP_NUM_THREADS sets at start); OpenBLAS's own pool is
started with OPENBLAS_NUM_THREADS (all.py sets it to the largest count tried) and
openblas_set_num_threads chooses how many of it a call uses.
"""
import ctypes
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import safetensors_np  # noqa: E402
from torch_gpt import CharGPT, TrainableGPT, model_shape, torch_step  # noqa: E402


class OpenBLAS:
    """The OpenBLAS torch loaded, if any: core type and thread count at run time."""

    def __init__(self):
        self.lib = None
        try:
            self.lib = ctypes.CDLL("libopenblas.so.0")
            self.lib.openblas_get_corename.restype = ctypes.c_char_p
            self.lib.openblas_get_config.restype = ctypes.c_char_p
        except OSError:
            return
        self.switch = hasattr(self.lib, "gotoblas_dynamic_init") and hasattr(self.lib, "gotoblas_dynamic_quit")
        self.env = os.environ.get("OPENBLAS_CORETYPE")
        self.now = "\0"  # the request in force: unknown

    def corename(self):
        return self.lib.openblas_get_corename().decode() if self.lib else "none"

    def use(self, request):
        if not self.lib or not self.switch or request == self.now:
            return
        if request is None:
            os.environ.pop("OPENBLAS_CORETYPE", None)
        else:
            os.environ["OPENBLAS_CORETYPE"] = request
        self.lib.gotoblas_dynamic_quit()
        self.lib.gotoblas_dynamic_init()
        self.now = request

    def set_threads(self, n):
        if self.lib:
            self.lib.openblas_set_num_threads(int(n))


def capability():
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            return line.split(":", 1)[1].strip()
    return "?"


class Worker:
    def __init__(self):
        self.blas = OpenBLAS()
        self.model = None

    def hello(self, cmd):
        cores = []
        if self.blas.lib and self.blas.switch:
            for request in cmd.get("cores", []):
                self.blas.use(request)
                name = self.blas.corename()
                if name not in [c[1] for c in cores]:
                    cores.append([request, name])
        elif self.blas.lib:
            cores.append([self.blas.env, self.blas.corename()])
        return {"torch": torch.__version__, "capability": capability(),
                "openblas": self.blas.lib.openblas_get_config().decode() if self.blas.lib else None,
                "cores": cores}

    def setup(self, cmd):
        layers, heads, _ = model_shape(cmd["model"])
        w = safetensors_np.read(cmd["weights"])
        self.train = cmd["train"]
        B, T = cmd["B"], cmd["T"]
        rng = np.random.default_rng(0)
        data = torch.from_numpy(rng.integers(0, 256, size=(B, T + 1)).astype(np.int64))
        self.x, self.y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
        if self.train:
            with open(cmd["model"]) as f:
                train_cfg = json.load(f)["train"]
            self.model = TrainableGPT(w, train_cfg, layers, heads)
            self.opt = self.model.optimizer()
        else:
            self.model = CharGPT(w, layers, heads)
        return {"ok": True}

    def check(self, cmd):
        tokens = safetensors_np.read(cmd["tokens"])["tokens"]
        kiln_logits = safetensors_np.read(cmd["logits"])["logits"]
        model = CharGPT({k: v.detach().numpy() for k, v in self.model.w.items()}, self.model.layers,
                        self.model.heads)
        with torch.inference_mode():
            logits = model(torch.from_numpy(tokens.astype(np.int64))).numpy()
        return {"max_diff": float(np.abs(logits - kiln_logits).max()), "scale": float(np.abs(kiln_logits).max())}

    def once(self):
        if self.train:
            torch_step(self.model, self.opt, self.x, self.y, 1e-4)
        else:
            with torch.inference_mode():
                self.model(self.x)

    def time(self, cmd):
        self.blas.use(cmd["core"])
        torch.set_num_threads(int(cmd["threads"]))
        self.blas.set_threads(cmd["blas_threads"])
        for _ in range(cmd["warmup"]):
            self.once()
        times = []
        for _ in range(cmd["iters"]):
            t0 = time.perf_counter()
            self.once()
            times.append(time.perf_counter() - t0)
        return {"times": times, "corename": self.blas.corename()}


def main():
    w = Worker()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        answer = getattr(w, cmd["cmd"])(cmd)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
