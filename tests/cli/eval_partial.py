"""eval_partial.py KILN — `kiln eval` and `kiln train --val` over a pass whose last batch is
partial, against PyTorch in float64: the pass split into batches of B and a last one of R
rows (a DataLoader with drop_last=False), each batch's loss over its own rows, weighted by
its targets (one per example here). kiln fills the rows after the last example with filler;
no loss may see it (driver/evaluate.c). The cases:
  - infonce (pairs): filler rows would be extra negatives of the real rows;
  - bce_logits and mse on cast labels (classify): filler labels are −100;
  - cross_entropy (classify), loss and accuracy: the filler is ignored either way;
  - a batch larger than the file (only a partial batch), and `kiln train --val`;
  - a model whose batch is a number cannot be compiled for R rows: its padded batch is
    kept when the loss is cross_entropy on the labels, and refused for infonce.
Prints one line per failure and exits 1 if there was any."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
import safetensors_np as st  # noqa: E402

torch.set_default_dtype(torch.float64)
kiln = sys.argv[1]
failures = 0
T, PAD, CLS, VOCAB = 6, 256, 260, 262  # byte tokenizer: <pad> = 256, <cls> = 260


def fail(msg):
    global failures
    print(f"FAIL: {msg}")
    failures += 1


def kiln_run(*args, ok=True):
    p = subprocess.run([kiln, *args], capture_output=True, text=True)
    if ok and p.returncode != 0:
        raise SystemExit(f"FAIL: kiln {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def model(name, batch, inputs, layers, outputs, losses):
    m = {"format": "kiln/1", "name": name, "dims": {"B": 4, "T": T},
         "inputs": {k: {"shape": [batch] + (["T"] if k.startswith(("tokens", "mask")) else []), "dtype": "i32"}
                    for k in inputs},
         "layers": layers, "outputs": outputs, "losses": losses,
         "init": {"seed": 3, "std": 1.0}, "train": {"optimizer": "adamw", "lr": 0.05, "steps": 1}}
    json.dump(m, open(f"{name}.json", "w"))
    kiln_run("init", f"{name}.json", "-o", f"{name}.safetensors")
    return {k: torch.tensor(v.astype(np.float64)) for k, v in st.read(f"{name}.safetensors").items()}


def side(texts):
    """classify/pairs rows: <cls> text, truncated to T, <pad> after; mask on real tokens"""
    ids = [([CLS] + list(s.encode()))[:T] for s in texts]
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (T - len(r)) for r in ids])
    return torch.tensor([r + [PAD] * (T - len(r)) for r in ids]), mask


def pool(E, texts):
    ids, m = side(texts)
    return (E[ids] * m[..., None]).sum(1) / m.sum(1, keepdim=True)


def split(n, B):
    return [(i, min(i + B, n)) for i in range(0, n, B)]


def passed(losses, spans):
    """the pass's loss: batch losses weighted by their rows (= their targets here)"""
    return sum(l * (e - s) for l, (s, e) in zip(losses, spans)) / sum(e - s for s, e in spans)


def eval_loss(args):
    p = kiln_run("eval", *args)
    loss = float(re.search(r"^loss (\S+)$", p.stdout, re.M).group(1))
    acc = re.search(r"^accuracy (\S+)$", p.stdout, re.M)
    return loss, float(acc.group(1)) if acc else None


def check(name, got, want, tol=1e-4):  # kiln prints 4 decimals
    if not abs(got - want) <= tol:
        fail(f"{name}: kiln {got:.6f}, PyTorch {want:.6f}")


# ---- pairs: infonce ---------------------------------------------------------------------
pairs = [("abc", "abd"), ("xyz", "xyw"), ("hello", "help"), ("foo", "food"), ("bar", "bark"),
         ("cat", "cab"), ("dog", "dot")]
open("pairs7.tsv", "w").write("".join(f"{a}\t{b}\n" for a, b in pairs))
open("pairs5.tsv", "w").write("".join(f"{a}\t{b}\n" for a, b in pairs[:5]))
pair_layers = [{"name": "ea", "op": "embedding", "in": "tokens_a", "vocab": VOCAB, "dim": 8},
               {"name": "pa", "op": "pool", "kind": "mean", "mask": "mask_a"},
               {"name": "eb", "op": "embedding", "in": "tokens_b", "vocab": VOCAB, "dim": 8},
               {"name": "pb", "op": "pool", "kind": "mean", "mask": "mask_b"}]
pair_inputs = ["tokens_a", "mask_a", "tokens_b", "mask_b"]


def infonce(W, rows, tau=0.5):
    a = F.normalize(pool(W["ea.weight"], [x for x, _ in rows]), dim=-1)
    b = F.normalize(pool(W["eb.weight"], [y for _, y in rows]), dim=-1)
    lg = a @ b.T / tau
    t = torch.arange(len(rows))
    return ((F.cross_entropy(lg, t) + F.cross_entropy(lg.T, t)) / 2).item()


def pairs_ref(W, rows, B):
    spans = split(len(rows), B)
    return passed([infonce(W, rows[s:e]) for s, e in spans], spans)


W = model("pairs", "B", pair_inputs, pair_layers, ["pa", "pb"],
          [{"op": "infonce", "in": ["pa", "pb"], "temperature": 0.5}])
for data, n, batch in (("pairs7.tsv", 7, 4), ("pairs5.tsv", 5, 8)):
    got, _ = eval_loss(["pairs.json", "--weights", "pairs.safetensors", "--data", data, "--task", "pairs",
                        "--batch", str(batch)])
    check(f"eval infonce, {n} pairs in batches of {batch}", got, pairs_ref(W, pairs[:n], batch))

# validation: the step-1 checkpoint's loss over the 7 pairs, in the log
kiln_run("train", "pairs.json", "--task", "pairs", "--data", "pairs5.tsv", "--val", "pairs7.tsv", "--steps", "1",
         "--save", "ck.safetensors", "--log", "log.jsonl")
val = [json.loads(line)["val_loss"] for line in open("log.jsonl") if "val_loss" in line]
Wck = {k: torch.tensor(v.astype(np.float64)) for k, v in st.read("ck.safetensors").items()}
if not val:
    fail("train --val: no val_loss in the log")
else:
    check("train --val infonce, 7 pairs in batches of 4", val[-1], pairs_ref(Wck, pairs, 4), tol=1e-5)

# ---- classify: bce_logits, mse, cross_entropy --------------------------------------------
cls = [(1, "good"), (0, "bad"), (1, "nice"), (0, "awful"), (1, "great"), (0, "poor"), (1, "fine")]
open("cls7.tsv", "w").write("".join(f"{y}\t{s}\n" for y, s in cls))
cls_inputs = ["tokens", "mask", "labels"]


def cls_layers(out):
    return [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": VOCAB, "dim": 8},
            {"name": "pool", "op": "pool", "kind": "mean", "mask": "mask"},
            {"name": "head", "op": "linear", "out": out}]


def head(W, rows):
    return pool(W["wte.weight"], [s for _, s in rows]) @ W["head.weight"].T + W["head.bias"]


scalar = cls_layers(1) + [{"name": "logit", "op": "reshape", "shape": ["B"]},
                          {"name": "y", "op": "cast", "in": "labels", "dtype": "f32"}]
for loss, fn in (("bce_logits", F.binary_cross_entropy_with_logits), ("mse", F.mse_loss)):
    W = model(loss, "B", cls_inputs, scalar, ["logit"], [{"op": loss, "in": ["logit", "y"]}])
    spans = split(len(cls), 4)
    want = passed([fn(head(W, cls[s:e])[:, 0], torch.tensor([float(y) for y, _ in cls[s:e]])).item()
                   for s, e in spans], spans)
    got, _ = eval_loss([f"{loss}.json", "--weights", f"{loss}.safetensors", "--data", "cls7.tsv",
                        "--task", "classify"])
    check(f"eval {loss}, 7 examples in batches of 4", got, want)


def ce_ref(W, rows, B):
    spans = split(len(rows), B)
    y = torch.tensor([y for y, _ in rows])
    lg = head(W, rows)
    want = passed([F.cross_entropy(lg[s:e], y[s:e]).item() for s, e in spans], spans)
    return want, (lg.argmax(1) == y).double().mean().item()


for batch, name in (("B", "ce"), (4, "ce_fixed")):  # a fixed batch: the padded batch, exact for CE
    W = model(name, batch, cls_inputs, cls_layers(3), ["head"],
              [{"op": "cross_entropy", "in": ["head", "labels"]}])
    got, acc = eval_loss([f"{name}.json", "--weights", f"{name}.safetensors", "--data", "cls7.tsv",
                          "--task", "classify"])
    want, want_acc = ce_ref(W, cls, 4)
    check(f"eval cross_entropy (batch {batch}), 7 examples in batches of 4", got, want)
    check(f"eval cross_entropy (batch {batch}) accuracy", acc, want_acc)

# ---- a fixed batch with infonce: refused, not a wrong loss ---------------------------------
model("pairs_fixed", 4, pair_inputs, pair_layers, ["pa", "pb"],
      [{"op": "infonce", "in": ["pa", "pb"], "temperature": 0.5}])
p = kiln_run("eval", "pairs_fixed.json", "--weights", "pairs_fixed.safetensors", "--data", "pairs7.tsv",
             "--task", "pairs", ok=False)
if p.returncode == 0 or "cannot be computed over those rows alone" not in p.stderr:
    fail(f"eval infonce with a fixed batch of 4 over 7 pairs: exit {p.returncode}, "
         f"stdout {p.stdout.strip()!r}, stderr {p.stderr.strip()!r}")
# …while a file of whole batches needs no second entry
open("pairs4.tsv", "w").write("".join(f"{a}\t{b}\n" for a, b in pairs[:4]))
p = kiln_run("eval", "pairs_fixed.json", "--weights", "pairs_fixed.safetensors", "--data", "pairs4.tsv",
             "--task", "pairs", ok=False)
if p.returncode != 0:
    fail(f"eval infonce with a fixed batch of 4 over 4 pairs: exit {p.returncode}: {p.stderr.strip()}")

sys.exit(1 if failures else 0)
