"""torch_parity.py KILN — small cases where kiln once disagreed with PyTorch at a point the
conformance cases keep away from; each is run with `kiln run --grads`, compiled and
interpreted, and compared with PyTorch in float64 (rtol 1e-4):
  - cast f32 → f32 is the identity for the gradient too (torch's .to(float32));
  - maximum/minimum split the gradient evenly on ties, as torch.maximum/minimum;
  - infonce with an all-zero row (a mean pool over a fully masked row) has
    F.normalize's finite gradient, not NaN;
  - matmul takes 1-D operands as torch.matmul does;
  - bce_logits at a logit of exactly 0 has torch's gradient sigmoid(0) - t;
  - cross_entropy's loss at logits near 1e6 is torch's (no digits lost to lse's rounding);
  - pow's gradients at base 0 and exponent 0 follow torch's masks.
Prints one line per failure and exits 1 if there was any."""
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
import safetensors_np as st  # noqa: E402

kiln = sys.argv[1]
failures = 0


def run(name, model, inputs, weights):
    """kiln run --grads of model, compiled and interpreted: two dicts of arrays"""
    import json
    os.makedirs(name, exist_ok=True)
    json.dump(model, open(f"{name}/model.json", "w"))
    st.write(f"{name}/in.safetensors", inputs)
    st.write(f"{name}/w.safetensors", weights)
    outs = []
    for extra in ([], ["--interp"]):
        cmd = [kiln, "run", f"{name}/model.json", "--weights", f"{name}/w.safetensors", "--inputs",
               f"{name}/in.safetensors", "--out", f"{name}/out.safetensors", "--grads"] + extra
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"FAIL: {name}: {' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
        outs.append(st.read(f"{name}/out.safetensors"))
    return outs


def compare(name, outs, want):
    global failures
    for mode, got in zip(("compiled", "interpreted"), outs):
        for key, w in want.items():
            g = got[key].astype(np.float64)
            w = np.asarray(w, dtype=np.float64).reshape(g.shape)
            if not np.all(np.isfinite(g)) or not np.allclose(g, w, rtol=1e-4, atol=1e-6):
                print(f"FAIL: {name} ({mode}): {key} = {g.ravel()[:6]}, PyTorch {w.ravel()[:6]}")
                failures += 1


def t64(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


rng = np.random.default_rng(1)
head = {"format": "kiln/1", "dims": {}}

# cast f32 → f32 between a linear layer and an mse loss
x = rng.standard_normal((2, 3)).astype(np.float32)
t = rng.standard_normal((2, 2)).astype(np.float32)
w = rng.standard_normal((2, 3)).astype(np.float32)
b = rng.standard_normal(2).astype(np.float32)
model = dict(head, name="cast", inputs={"x": {"shape": [2, 3], "dtype": "f32"}, "t": {"shape": [2, 2], "dtype": "f32"}},
             layers=[{"name": "l", "op": "linear", "in": "x", "out": 2},
                     {"name": "c", "op": "cast", "in": "l", "dtype": "f32"}],
             outputs=["c"], losses=[{"op": "mse", "in": ["c", "t"]}])
outs = run("cast", model, {"x": x, "t": t}, {"l.weight": w, "l.bias": b})
X, W, B = t64(x), t64(w), t64(b)
loss = F.mse_loss((X @ W.T + B).to(torch.float64), torch.tensor(t, dtype=torch.float64))
loss.backward()
compare("cast", outs, {"loss": loss.item(), "grad.x": X.grad, "grad.l.weight": W.grad, "grad.l.bias": B.grad})

# maximum and minimum with ties at two of four places
x = np.array([1, 2, 3, -1], np.float32)
y = np.array([1, 5, 3, -4], np.float32)
model = dict(head, name="ties", inputs={"x": {"shape": [4], "dtype": "f32"}, "y": {"shape": [4], "dtype": "f32"}},
             layers=[{"name": "hi", "op": "maximum", "in": ["x", "y"]}, {"name": "lo", "op": "minimum", "in": ["x", "y"]},
                     {"name": "s", "op": "mul", "in": ["hi", "lo"]}],
             outputs=["s"], losses=[{"op": "mse", "in": ["s", "hi"]}])
outs = run("ties", model, {"x": x, "y": y}, {})
X, Y = t64(x), t64(y)
hi = torch.maximum(X, Y)
loss = F.mse_loss(hi * torch.minimum(X, Y), hi)
loss.backward()
compare("ties", outs, {"loss": loss.item(), "grad.x": X.grad, "grad.y": Y.grad})

# infonce with a row of zeros
a = rng.standard_normal((3, 4)).astype(np.float32)
a[0] = 0
bb = rng.standard_normal((3, 4)).astype(np.float32)
model = dict(head, name="zero_row", inputs={"a": {"shape": [3, 4], "dtype": "f32"}, "b": {"shape": [3, 4], "dtype": "f32"}},
             layers=[{"name": "o", "op": "scale", "in": "a", "by": 1.0}],
             outputs=["o"], losses=[{"op": "infonce", "in": ["a", "b"]}])
outs = run("zero_row", model, {"a": a, "b": bb}, {})
A, BB = t64(a), t64(bb)
logits = F.normalize(A, dim=-1) @ F.normalize(BB, dim=-1).T / 0.07
target = torch.arange(3)
loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
loss.backward()
compare("zero_row", outs, {"loss": loss.item(), "grad.a": A.grad, "grad.b": BB.grad})

# bce_logits at logits exactly 0 (a zero-initialised head): torch's gradient sigmoid(0) - t
x = rng.standard_normal((3, 4)).astype(np.float32)
t = np.array([[1, 0], [0.3, 1], [0, 0]], np.float32)
w, b = np.zeros((2, 4), np.float32), np.zeros(2, np.float32)
model = dict(head, name="bce0", inputs={"x": {"shape": [3, 4], "dtype": "f32"}, "t": {"shape": [3, 2], "dtype": "f32"}},
             layers=[{"name": "h", "op": "linear", "in": "x", "out": 2}],
             outputs=["h"], losses=[{"op": "bce_logits", "in": ["h", "t"]}])
outs = run("bce0", model, {"x": x, "t": t}, {"h.weight": w, "h.bias": b})
X, W, B = t64(x), t64(w), t64(b)
loss = F.binary_cross_entropy_with_logits(X @ W.T + B, torch.tensor(t, dtype=torch.float64))
loss.backward()
compare("bce_logits at 0", outs, {"loss": loss.item(), "grad.x": X.grad, "grad.h.weight": W.grad, "grad.h.bias": B.grad})

# cross_entropy (and its label smoothing) does not move with a constant added to the
# logits: at 1e6 the loss once lost the log term's digits to lse's rounding
x = (rng.standard_normal((4, 8)) + 1e6).astype(np.float32)
t = np.array([1, 7, 0, 3], np.int32)
for eps in (0.0, 0.1):
    model = dict(head, name=f"ce_offset{int(eps * 10)}", inputs={"x": {"shape": [4, 8], "dtype": "f32"},
                                                       "t": {"shape": [4], "dtype": "i32"}},
                 layers=[{"name": "o", "op": "scale", "in": "x", "by": 1.0}],
                 outputs=["o"], losses=[{"op": "cross_entropy", "in": ["o", "t"], "label_smoothing": eps}])
    outs = run(f"ce_offset{int(eps * 10)}", model, {"x": x, "t": t}, {})
    X = t64(x)
    loss = F.cross_entropy(X, torch.tensor(t, dtype=torch.long), label_smoothing=eps)
    loss.backward()
    compare(f"cross_entropy at logits near 1e6 (label_smoothing {eps})", outs, {"loss": loss.item(), "grad.x": X.grad})

# pow's gradients under torch's masks: the base's is 0 where the exponent is 0 (once
# 0·0^-1 = NaN at base 0), the exponent's 0 where the base is 0 and the exponent >= 0
a = np.array([0, 2, 1.5, 0], np.float32)
e = np.array([0, 0, 2, 2], np.float32)
t = rng.standard_normal(4).astype(np.float32)
model = dict(head, name="pow0", inputs={"a": {"shape": [4], "dtype": "f32"}, "e": {"shape": [4], "dtype": "f32"},
                                        "t": {"shape": [4], "dtype": "f32"}},
             layers=[{"name": "p", "op": "pow", "in": ["a", "e"]}],
             outputs=["p"], losses=[{"op": "mse", "in": ["p", "t"]}])
outs = run("pow0", model, {"a": a, "e": e, "t": t}, {})
A, E = t64(a), t64(e)
loss = F.mse_loss(torch.pow(A, E), torch.tensor(t, dtype=torch.float64))
loss.backward()
compare("pow at base 0 and exponent 0", outs, {"loss": loss.item(), "grad.a": A.grad, "grad.e": E.grad})

# matmul of 1-D operands, as torch.matmul: (k)·(k), (k)·(2, k, n), (2, m, k)·(k), and
# (k)·(n, k) with transpose_b (a vector is its own transpose: transpose_a is set on each
# vector a and changes nothing; the matrix b is transposed)
shapes = [((4,), (4,), False), ((4,), (2, 4, 3), False), ((2, 3, 4), (4,), False), ((4,), (3, 4), True)]
for i, (sa, sb, tb) in enumerate(shapes):
    a = rng.standard_normal(sa).astype(np.float32)
    bm = rng.standard_normal(sb).astype(np.float32)
    A, BM = t64(a), t64(bm)
    y = torch.matmul(A, BM.transpose(-1, -2) if tb else BM)
    t = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    model = dict(head, name=f"vec{i}", inputs={"a": {"shape": list(sa), "dtype": "f32"},
                                                "b": {"shape": list(sb), "dtype": "f32"},
                                                "t": {"shape": list(t.shape), "dtype": "f32"}},
                 layers=[{"name": "y", "op": "matmul", "in": ["a", "b"], "transpose_a": len(sa) == 1, "transpose_b": tb}],
                 outputs=["y"], losses=[{"op": "mse", "in": ["y", "t"]}])
    outs = run(f"vec{i}", model, {"a": a, "b": bm, "t": t}, {})
    loss = F.mse_loss(y, torch.tensor(t, dtype=torch.float64))
    loss.backward()
    compare(f"matmul {sa}·{sb}{' transpose_b' if tb else ''}", outs,
            {"y": y.detach(), "loss": loss.item(), "grad.a": A.grad, "grad.b": BM.grad})

print(f"torch_parity: {failures} failure(s)" if failures else "torch_parity: ok")
sys.exit(1 if failures else 0)
