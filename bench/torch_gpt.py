"""torch_gpt.py — examples/char_gpt.json written the way a PyTorch user would.

Shared by the bench scripts (all.py's torch_worker.py, forward_bench.py, train_bench.py),
so that every comparison runs the same PyTorch model: token embedding + learned
positions, LAYERS pre-LN causal blocks (masked softmax attention, gelu_tanh MLP), a final
layernorm and the head tied to the embedding, with the weights `kiln init` wrote (loaded
from its safetensors file). The training step is forward, cross_entropy, backward,
clip_grad_norm_ and torch.optim.AdamW with the model file's `train` settings.

Importing this imports torch: set OMP_NUM_THREADS / OPENBLAS_* before, if at all.
"""
import json

import numpy as np
import torch
import torch.nn.functional as F


def model_shape(model_path):
    """(layers, heads, d) of a char_gpt-like model file: the repeat count and heads of its
    encoder layers and the embedding's dimension."""
    with open(model_path) as f:
        m = json.load(f)
    layers = heads = d = 0
    for layer in m["layers"]:
        if layer["op"] == "embedding":
            d = layer["dim"]
        elif layer["op"] == "encoder_layer":
            layers += layer.get("repeat", 1)
            heads = layer["heads"]
    return layers, heads, d


class CharGPT(torch.nn.Module):
    """examples/char_gpt.json written the way a PyTorch user would."""

    def __init__(self, w, layers=6, heads=6):
        super().__init__()
        self.layers, self.heads = layers, heads
        self.w = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in w.items()}

    def linear(self, x, name):
        return F.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.w[name + ".weight"], self.w[name + ".bias"], 1e-5)

    def attn(self, x, name):
        B, T, D = x.shape
        dh = D // self.heads
        q, k, v = (self.linear(x, f"{name}.{p}").view(B, T, self.heads, dh).transpose(1, 2) for p in "qkv")
        scores = q @ k.transpose(-2, -1) / dh ** 0.5
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        p = scores.masked_fill(causal, float("-inf")).softmax(-1)
        return self.linear((p @ v).transpose(1, 2).reshape(B, T, D), f"{name}.o")

    def forward(self, tokens):
        T = tokens.shape[1]
        x = self.w["wte.weight"][tokens] + self.w["wpe.weight"][:T]
        for i in range(self.layers):
            b = f"blocks.{i}"
            x = x + self.attn(self.ln(x, b + ".ln1"), b + ".attn")
            h = F.gelu(self.linear(self.ln(x, b + ".ln2"), b + ".ff.fc1"), approximate="tanh")
            x = x + self.linear(h, b + ".ff.fc2")
        return F.linear(self.ln(x, "ln_f"), self.w["wte.weight"])  # tied head


class TrainableGPT(CharGPT):
    """CharGPT with its weights as parameters and the model file's AdamW."""

    def __init__(self, w, train, layers=6, heads=6):
        super().__init__(w, layers, heads)
        self.train_cfg = train
        for v in self.w.values():
            v.requires_grad_(True)
        self.params = list(self.w.values())

    def optimizer(self):
        t = self.train_cfg
        return torch.optim.AdamW(self.params, lr=t["lr"], betas=tuple(t.get("betas", (0.9, 0.999))),
                                 eps=t.get("eps", 1e-8), weight_decay=t.get("weight_decay", 0.0))


def torch_step(model, opt, x, y, lr):
    """One training step as kiln's: forward, cross_entropy, backward, clip, AdamW.step."""
    for g in opt.param_groups:
        g["lr"] = float(np.float32(lr))  # kiln passes the rate as an f32
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if model.train_cfg.get("grad_clip", 0) > 0:
        torch.nn.utils.clip_grad_norm_(model.params, model.train_cfg["grad_clip"])
    opt.step()
    return float(loss)
