#!/usr/bin/env bash
# test_run_interp.sh KILN SRCDIR — `kiln run --interp` end to end on examples/char_gpt.json:
# output shape and finiteness, dims bound from the inputs' shapes and by -D (an unused input
# is fine, a tensor naming no input is refused), identical bytes
# on a second run, causality, batch independence, agreement with a float64 numpy
# reference of the GPT forward pass, compiled execution agreeing with the interpreter (or
# refused as not implemented), --grads (its refusals, then a loss and every parameter's
# gradient), and that refused runs write nothing.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts

gpt=$src/examples/char_gpt.json
kiln_ok "init" init "$gpt" -o w.safetensors --seed 1 || finish

# inputs: x1 (1, 16); x2 (2, 16) whose row 0 is x1; x3 = x1 with its last token changed;
# also a weights file with every tensor randomised (non-zero biases, non-unit norm weights)
# so that the numpy reference below tests every parameter's role
"$py" - <<'EOF'
import numpy as np
import safetensors_np as st
rng = np.random.default_rng(42)
x1 = rng.integers(0, 256, size=(1, 16)).astype("<i4")
x2 = np.concatenate([x1, rng.integers(0, 256, size=(1, 16)).astype("<i4")])
x3 = x1.copy()
x3[0, 15] = (x3[0, 15] + 1) % 256
st.write("x1.safetensors", {"tokens": x1})
st.write("x2.safetensors", {"tokens": x2})
st.write("x3.safetensors", {"tokens": x3})
# inputs beyond the model's needs are fine: targets are only used by the loss
st.write("x1t.safetensors", {"tokens": x1, "targets": x1})
# …but a tensor the model has no input for is refused (a misspelt name)
st.write("x1x.safetensors", {"tokens": x1, "target": x1})
w = st.read("w.safetensors")
r = {}
for name, a in w.items():
    if name.endswith(".bias"):
        r[name] = rng.normal(0, 0.1, a.shape)
    elif name.split(".")[-2].startswith("ln"):
        r[name] = 1 + rng.normal(0, 0.1, a.shape)
    else:
        r[name] = rng.normal(0, 0.05, a.shape)
st.write("wr.safetensors", {k: v.astype("<f4") for k, v in r.items()})
EOF

# ---- shapes: -D, then bound from the inputs alone -------------------------------------------
kiln_ok "run -D B=1 -D T=16" run "$gpt" --weights w.safetensors --inputs x1.safetensors --out y1.safetensors \
    --interp -D B=1 -D T=16 || finish
"$py" - y1.safetensors <<'EOF' || fail "y1 (above)"
import sys
import numpy as np
import safetensors_np as st
y = st.read(sys.argv[1])
bad = []
if set(y) != {"logits"}:
    bad.append(f"the output file holds {sorted(y)}, expected exactly ['logits']")
l = y.get("logits")
if l is not None:
    if l.dtype != np.float32:
        bad.append(f"logits dtype {l.dtype}")
    if l.shape != (1, 16, 256):
        bad.append(f"logits shape {l.shape}, expected (1, 16, 256)")
    if not np.isfinite(l).all():
        bad.append("logits has non-finite values")
    if float(l.std()) == 0.0:
        bad.append("logits is constant")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
EOF
kiln_ok "run with dims from the inputs" run "$gpt" --weights w.safetensors --inputs x1.safetensors \
    --out y1b.safetensors --interp && {
    cmp -s y1.safetensors y1b.safetensors || fail "dims bound from the inputs give other bytes than -D B=1 -D T=16"
}
kiln_ok "second run" run "$gpt" --weights w.safetensors --inputs x1.safetensors --out y1c.safetensors --interp -D B=1 -D T=16 && {
    cmp -s y1.safetensors y1c.safetensors || fail "a second identical run gave different bytes"
}
kiln_ok "run with an extra (unused) input" run "$gpt" --weights w.safetensors --inputs x1t.safetensors \
    --out y1d.safetensors --interp && {
    cmp -s y1.safetensors y1d.safetensors || fail "an extra targets tensor changed the logits"
}
for mode in --interp --threads=1; do # the interpreter and compiled code bind inputs alike
    kiln_fails "run with a tensor no input has ($mode)" 1 "target: error: the model has no input of this name (its inputs: tokens, targets); did you mean 'targets'?" \
        run "$gpt" --weights w.safetensors --inputs x1x.safetensors --out nope.safetensors ${mode/=/ }
done
# -D beats the inputs' shapes: T=8 is bound, so a (1, 16) tokens tensor no longer fits
kiln_fails "-D T=8 against (1, 16) tokens" 1 "tokens" run "$gpt" --weights w.safetensors --inputs x1.safetensors \
    --out bad.safetensors --interp -D T=8
grep -q 'i32\[1,8\]' err.txt || fail "-D T=8: the message does not give the needed shape i32[1,8]: $(head -n 3 err.txt)"
[[ -e bad.safetensors ]] && fail "a failed run created its --out file"
# T above max_len (256) is refused at load time, not at run time
"$py" -c '
import numpy as np, safetensors_np as st
st.write("xlong.safetensors", {"tokens": np.zeros((1, 300), dtype="<i4")})'
kiln_fails "T=300 > max_len" 1 "max_len" run "$gpt" --weights w.safetensors --inputs xlong.safetensors \
    --out bad.safetensors --interp

# ---- semantics: batch rows are independent, the model is causal, numpy agrees ---------------
kiln_ok "run (2, 16)" run "$gpt" --weights w.safetensors --inputs x2.safetensors --out y2.safetensors --interp || true
kiln_ok "run with the last token changed" run "$gpt" --weights w.safetensors --inputs x3.safetensors \
    --out y3.safetensors --interp || true
kiln_ok "run with randomised weights" run "$gpt" --weights wr.safetensors --inputs x2.safetensors \
    --out yr.safetensors --interp || true
if [[ -f y2.safetensors && -f y3.safetensors && -f yr.safetensors ]]; then
    "$py" - <<'EOF' || fail "semantics (above)"
import math
import numpy as np
import safetensors_np as st
bad = []
y1 = st.read("y1.safetensors")["logits"]
y2 = st.read("y2.safetensors")["logits"]
y3 = st.read("y3.safetensors")["logits"]
if y2.shape != (2, 16, 256):
    bad.append(f"(2, 16) tokens gave logits {y2.shape}")
elif not np.allclose(y2[0], y1[0], rtol=1e-5, atol=1e-6):
    bad.append(f"batch row 0 differs with another row beside it (max diff {np.abs(y2[0] - y1[0]).max():.2e})")
if not np.allclose(y3[0, :15], y1[0, :15], rtol=1e-6, atol=1e-7):
    bad.append(f"changing token 15 changed the logits of positions 0..14 (max diff {np.abs(y3[0, :15] - y1[0, :15]).max():.2e}): not causal")
if np.allclose(y3[0, 15], y1[0, 15]):
    bad.append("changing token 15 did not change the logits at position 15")

# float64 reference of char_gpt (pre-LN GPT, SPEC 1.2): the same math PyTorch would do
w = {k: v.astype(np.float64) for k, v in st.read("wr.safetensors").items()}
tok = st.read("x2.safetensors")["tokens"]
B, T = tok.shape
D, heads, L = 384, 6, 6
dh = D // heads
def ln(x, p):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * w[p + ".weight"] + w[p + ".bias"]
def lin(x, p):
    return x @ w[p + ".weight"].T + w[p + ".bias"]
def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
x = w["wte.weight"][tok] + w["wpe.weight"][:T]
causal = np.triu(np.ones((T, T), dtype=bool), 1)
for i in range(L):
    p = f"blocks.{i}"
    a = ln(x, p + ".ln1")
    q, k, v = (lin(a, f"{p}.attn.{n}").reshape(B, T, heads, dh).transpose(0, 2, 1, 3) for n in "qkv")
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    s = np.where(causal, -np.inf, s)
    s = np.exp(s - s.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    o = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
    h = x + lin(o, p + ".attn.o")
    x = h + lin(gelu_tanh(lin(ln(h, p + ".ln2"), p + ".ff.fc1")), p + ".ff.fc2")
ref = ln(x, "ln_f") @ w["wte.weight"].T
got = st.read("yr.safetensors")["logits"]
if got.shape != ref.shape:
    bad.append(f"randomised weights: logits {got.shape}, expected {ref.shape}")
else:
    err = np.abs(got - ref).max()
    scale = np.abs(ref).max()
    if not err <= 1e-4 * scale + 1e-4:
        bad.append(f"logits differ from the float64 numpy reference: max abs diff {err:.3e} (max |logit| {scale:.3f})")
for b in bad:
    print("  " + b)
raise SystemExit(1 if bad else 0)
EOF
fi

# ---- compiled execution: until it is built, a clear refusal (exit 1, "not implemented",
# no output file); once it is, it must agree with the interpreter (SPEC: "both must agree")
status=0
"$kiln" run "$gpt" --weights wr.safetensors --inputs x2.safetensors --out yc.safetensors >out.txt 2>err.txt || status=$?
if [[ $status -eq 0 ]]; then
    "$py" - <<'EOF' || fail "compiled run vs --interp (above)"
import numpy as np
import safetensors_np as st
c, i = st.read("yc.safetensors"), st.read("yr.safetensors")
bad = []
if set(c) != set(i):
    bad.append(f"compiled run wrote {sorted(c)}, the interpreter {sorted(i)}")
for k in set(c) & set(i):
    if c[k].shape != i[k].shape or c[k].dtype != i[k].dtype:
        bad.append(f"{k}: compiled {c[k].dtype}{c[k].shape}, interpreter {i[k].dtype}{i[k].shape}")
    elif not np.allclose(c[k], i[k], rtol=1e-4, atol=1e-5):
        bad.append(f"{k}: compiled and interpreted results differ by up to {np.abs(c[k] - i[k]).max():.3e}")
for b in bad:
    print("  " + b)
raise SystemExit(1 if bad else 0)
EOF
elif [[ $status -ne 1 ]] || ! grep -q "not implemented" err.txt; then
    fail "run without --interp: exit $status, expected 0 (agreeing with --interp) or 1 saying 'not implemented': $(head -n 5 err.txt)"
elif [[ -e yc.safetensors ]]; then
    fail "a refused compiled run created its --out file"
fi

# ---- --grads: every input is needed (the targets too), a model needs a loss; then `loss`
# and one gradient per parameter (the tied head's weight is wte.weight's) ----------------------
kiln_fails "run --grads without targets" 1 "targets: error: input missing" run "$gpt" --weights w.safetensors \
    --inputs x1.safetensors --out nope.safetensors --grads --interp
cat > noloss.json <<'EOF'
{"format": "kiln/1", "name": "noloss", "inputs": {"x": {"shape": [3], "dtype": "f32"}},
 "layers": [{"name": "y", "op": "exp", "in": "x"}], "outputs": ["y"]}
EOF
"$py" -c 'import numpy as np, safetensors_np as st; st.write("nx.safetensors", {"x": np.ones(3, "<f4")}); st.write("nw.safetensors", {})'
kiln_fails "run --grads without a loss" 1 "needs a loss" run noloss.json --weights nw.safetensors \
    --inputs nx.safetensors --out nope.safetensors --grads --interp
if kiln_ok "run --grads" run "$gpt" --weights wr.safetensors --inputs x1t.safetensors --out g.safetensors --grads --interp; then
    "$py" - <<'EOF' || fail "run --grads outputs (above)"
import numpy as np
import safetensors_np as st
g, w = st.read("g.safetensors"), st.read("wr.safetensors")
bad = []
if g["loss"].shape != () or not np.isfinite(g["loss"]):
    bad.append(f"loss: {g['loss']!r}")
for name, a in w.items():
    d = g.get("grad." + name)
    if d is None or d.shape != a.shape or not np.isfinite(d).all():
        bad.append(f"grad.{name}: missing, misshapen or not finite")
if [k for k in g if k.startswith("grad.") and k[5:] not in w]:
    bad.append("gradients of non-parameters (the inputs are i32)")
if not (np.abs(g.get("grad.wte.weight", np.zeros(1))) > 0).any():
    bad.append("grad.wte.weight is all zeros")
for b in bad:
    print("  " + b)
raise SystemExit(1 if bad else 0)
EOF
fi

# ---- no output file from a refused run ------------------------------------------------------
[[ -e nope.safetensors ]] && fail "a refused run created its --out file"

finish
