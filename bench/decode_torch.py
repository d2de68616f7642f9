#!/usr/bin/python3
"""decode_torch.py — PyTorch's side of bench/decode_bench.py: char_gpt generating with its
own KV cache at batch 1, one process per ATen CPU capability.

The model is torch_gpt.CharGPT (the architecture every bench compares) with the cache a
PyTorch user writes for fast decoding: per layer, key and value tensors of
(1, heads, context, head dim) allocated once; the prefill runs the causal forward pass
over the prompt and stores its keys and values; each decode step runs one token at
position pos, writes its key and value row in place (cache[:, :, pos] = k) and attends
over rows 0..pos. Everything under torch.inference_mode().

Protocol: the commands of torch_worker.py (hello, quit; core types and threads switched
the same way, by its OpenBLAS class) plus, one JSON line each:

  {"cmd": "setup", "weights": PATH, "model": PATH, "context": T}
  {"cmd": "time_prefill", "core", "threads", "blas_threads", "warmup", "iters", "n": n}
        -> {"times": [s, ...]}: prefills of an n-token prompt
  {"cmd": "time_decode", "core", "threads", "blas_threads", "warmup", "iters", "start": s, "steps": k}
        -> {"times": [s, ...]}: each the time of k greedy decode steps after a prefill of
        s tokens (the prefill untimed)
  {"cmd": "check", "ids": [...], "n_prompt": n, "logprobs": [...]}
        -> {"max_diff"}: kiln's greedy continuation (ids after an n-token prompt, the
        log-probabilities kiln gave them) replayed through this cache: the largest
        difference of the log-probabilities; also checks that the cached step's logits
        equal the full forward's last row
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import safetensors_np  # noqa: E402
from torch_gpt import CharGPT, model_shape  # noqa: E402
from torch_worker import Worker  # noqa: E402


class CachedGPT(CharGPT):
    """CharGPT with a preallocated KV cache: prefill(tokens) and step(token, pos)."""

    def __init__(self, w, layers, heads, context):
        super().__init__(w, layers, heads)
        self.context = context
        d = self.w["wte.weight"].shape[1]
        self.dh = d // heads
        self.k = [torch.zeros(1, heads, context, self.dh) for _ in range(layers)]
        self.v = [torch.zeros(1, heads, context, self.dh) for _ in range(layers)]

    def attn_cached(self, x, name, layer, pos):
        """x: (1, T, D) at positions pos..pos+T-1; writes their keys and values."""
        B, T, D = x.shape
        q, k, v = (self.linear(x, f"{name}.{p}").view(B, T, self.heads, self.dh).transpose(1, 2) for p in "qkv")
        self.k[layer][:, :, pos:pos + T] = k
        self.v[layer][:, :, pos:pos + T] = v
        keys, values = self.k[layer][:, :, :pos + T], self.v[layer][:, :, :pos + T]
        scores = q @ keys.transpose(-2, -1) / self.dh ** 0.5
        if T > 1:  # the prefill: causal within the prompt
            causal = torch.ones(T, pos + T, dtype=torch.bool).triu(pos + 1)
            scores = scores.masked_fill(causal, float("-inf"))
        p = scores.softmax(-1)
        return self.linear((p @ values).transpose(1, 2).reshape(B, T, D), f"{name}.o")

    def run(self, tokens, pos):
        """Logits (1, T, V) of tokens (1, T) at positions pos.., through the cache."""
        T = tokens.shape[1]
        x = self.w["wte.weight"][tokens] + self.w["wpe.weight"][pos:pos + T]
        for i in range(self.layers):
            b = f"blocks.{i}"
            x = x + self.attn_cached(self.ln(x, b + ".ln1"), b + ".attn", i, pos)
            h = F.gelu(self.linear(self.ln(x, b + ".ln2"), b + ".ff.fc1"), approximate="tanh")
            x = x + self.linear(h, b + ".ff.fc2")
        return F.linear(self.ln(x, "ln_f"), self.w["wte.weight"])

    def prefill(self, tokens):
        return self.run(tokens, 0)[:, -1]

    def step(self, token, pos):
        return self.run(token.view(1, 1), pos)[:, -1]


class DecodeWorker(Worker):
    def setup(self, cmd):
        layers, heads, _ = model_shape(cmd["model"])
        w = safetensors_np.read(cmd["weights"])
        self.model = CachedGPT(w, layers, heads, cmd["context"])
        rng = np.random.default_rng(0)
        self.prompt = torch.from_numpy(rng.integers(0, 256, size=(1, cmd["context"])).astype(np.int64))
        return {"ok": True}

    def settings(self, cmd):
        self.blas.use(cmd["core"])
        torch.set_num_threads(int(cmd["threads"]))
        self.blas.set_threads(cmd["blas_threads"])

    def decode(self, start, steps):
        """A prefill of start tokens, then steps greedy tokens: the steps' time."""
        m = self.model
        logits = m.prefill(self.prompt[:, :start])
        t0 = time.perf_counter()
        for pos in range(start, start + steps):
            token = logits.argmax(-1)
            logits = m.step(token, pos)
        return time.perf_counter() - t0

    def time_prefill(self, cmd):
        self.settings(cmd)
        times = []
        with torch.inference_mode():
            for r in range(cmd["warmup"] + cmd["iters"]):
                t0 = time.perf_counter()
                self.model.prefill(self.prompt[:, :cmd["n"]])
                if r >= cmd["warmup"]:
                    times.append(time.perf_counter() - t0)
        return {"times": times}

    def time_decode(self, cmd):
        self.settings(cmd)
        times = []
        with torch.inference_mode():
            for r in range(cmd["warmup"] + cmd["iters"]):
                t = self.decode(cmd["start"], cmd["steps"])
                if r >= cmd["warmup"]:
                    times.append(t)
        return {"times": times}

    def check(self, cmd):
        m, n = self.model, cmd["n_prompt"]
        ids = torch.tensor(cmd["ids"], dtype=torch.int64).view(1, -1)
        diff = 0.0
        with torch.inference_mode():
            logits = m.prefill(ids[:, :n])
            for i, lp in enumerate(cmd["logprobs"]):
                ours = float(F.log_softmax(logits, -1)[0, ids[0, n + i]])
                diff = max(diff, abs(ours - lp))
                if n + i + 1 < ids.shape[1]:
                    logits = m.step(ids[0, n + i], n + i)
            # the cache's step against the full forward's last row
            full = CharGPT.forward(m, ids[:, :-1])[:, -1]
            step_diff = float((full - logits).abs().max())
        return {"max_diff": diff, "step_vs_full": step_diff}


def main():
    w = DecodeWorker()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        answer = getattr(w, cmd["cmd"])(cmd)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
