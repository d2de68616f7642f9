#!/usr/bin/env bash
# test_init.sh KILN SRCDIR — `kiln init`: deterministic per seed, every parameter of the
# SPEC present with its shape and nothing else, and the SPEC's init scheme (norm weights
# 1, biases 0, normal(0, std), residual projections of repeated layers std/√(2·layers),
# `param` nodes by their own init).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

gpt=$src/examples/char_gpt.json
run "init --seed 7" "$kiln" init "$gpt" -o a.safetensors --seed 7 || true
run "init --seed 7 again" "$kiln" init "$gpt" -o b.safetensors --seed 7 || true
run "init --seed 8" "$kiln" init "$gpt" -o c.safetensors --seed 8 || true
run "init (the model's init.seed, 1337)" "$kiln" init "$gpt" -o d.safetensors || true
run "init --seed 1337" "$kiln" init "$gpt" -o e.safetensors --seed 1337 || true
run "init --seed 7 -D B=1 -D T=16" "$kiln" init "$gpt" -o f.safetensors --seed 7 -D B=1 -D T=16 || true
if [[ $failures -gt 0 ]]; then
    echo "test_init: $failures failure(s)"
    exit 1
fi

cmp -s a.safetensors b.safetensors || fail "the same seed gave different files"
cmp -s a.safetensors c.safetensors && fail "seeds 7 and 8 gave identical files"
cmp -s d.safetensors e.safetensors || fail "without --seed the model's init.seed (1337) is not used"
cmp -s a.safetensors f.safetensors || fail "-D B=1 -D T=16 changed the parameters of char_gpt"

"$py" - "$src/scripts" a.safetensors c.safetensors <<'EOF' || fail "char_gpt's parameters (above)"
import math, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np

w = safetensors_np.read(sys.argv[2])
other = safetensors_np.read(sys.argv[3])
V, D, H, L, MAXLEN, STD = 256, 384, 1536, 6, 256, 0.02
# The SPEC's names (section 1.2). Values: ("normal", std) | "ones" | "zeros"
want = {"wte.weight": ((V, D), ("normal", STD)), "wpe.weight": ((MAXLEN, D), ("normal", STD)),
        "ln_f.weight": ((D,), "ones"), "ln_f.bias": ((D,), "zeros")}
resid = STD / math.sqrt(2 * L)
for i in range(L):
    p = f"blocks.{i}"
    for proj in "qkvo":
        want[f"{p}.attn.{proj}.weight"] = ((D, D), ("normal", resid if proj == "o" else STD))
        want[f"{p}.attn.{proj}.bias"] = ((D,), "zeros")
    for n in ("ln1", "ln2"):
        want[f"{p}.{n}.weight"] = ((D,), "ones")
        want[f"{p}.{n}.bias"] = ((D,), "zeros")
    want[f"{p}.ff.fc1.weight"] = ((H, D), ("normal", STD))
    want[f"{p}.ff.fc1.bias"] = ((H,), "zeros")
    want[f"{p}.ff.fc2.weight"] = ((D, H), ("normal", resid))
    want[f"{p}.ff.fc2.bias"] = ((D,), "zeros")
# the head is tied to wte.weight and has bias: false, so there is no logits.*

bad = []
missing = sorted(set(want) - set(w))
extra = sorted(set(w) - set(want))
if missing:
    bad.append(f"missing parameters: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
if extra:
    bad.append(f"unexpected tensors: {extra[:8]}{' ...' if len(extra) > 8 else ''}")
for name, (shape, init) in want.items():
    if name not in w:
        continue
    a = w[name]
    if a.dtype != np.float32:
        bad.append(f"{name}: dtype {a.dtype}, expected float32")
    if a.shape != shape:
        bad.append(f"{name}: shape {a.shape}, expected {shape}")
        continue
    if not np.isfinite(a).all():
        bad.append(f"{name}: non-finite values")
        continue
    if init == "ones" and not (a == 1).all():
        bad.append(f"{name}: a norm weight should be all ones")
    elif init == "zeros" and not (a == 0).all():
        bad.append(f"{name}: a bias should be all zeros")
    elif isinstance(init, tuple):
        std = init[1]
        n = a.size
        s, m = float(a.std()), float(a.mean())
        if abs(s - std) > 0.03 * std + 4 * std / math.sqrt(2 * n):
            bad.append(f"{name}: std {s:.6f}, expected {std:.6f}")
        if abs(m) > 5 * std / math.sqrt(n):
            bad.append(f"{name}: mean {m:.2e}, expected about 0 (± {5 * std / math.sqrt(n):.1e})")
        # roughly normal: about 68.3% within one std
        frac = float((np.abs(a) < std).mean())
        if abs(frac - 0.6827) > 0.02:
            bad.append(f"{name}: {frac:.3f} of the values lie within one std, normal gives 0.683")
        if name in other and np.array_equal(a, other[name]):
            bad.append(f"{name}: identical for seeds 7 and 8")
# parameters must not repeat each other's random streams
pairs = [("blocks.0.attn.q.weight", "blocks.0.attn.k.weight"), ("blocks.0.attn.q.weight", "blocks.1.attn.q.weight"),
         ("wte.weight", "wpe.weight")]
for x, y in pairs:
    if x in w and y in w and w[x].shape == w[y].shape:
        if np.array_equal(w[x], w[y]) or abs(np.corrcoef(w[x].ravel(), w[y].ravel())[0, 1]) > 0.05:
            bad.append(f"{x} and {y} are not independent")
for b in bad[:40]:
    print("  " + b)
sys.exit(1 if bad else 0)
EOF

# ---- a model with its own init.std, repeated stacks of 3 and 1, and `param` nodes -------------
cat >custom.json <<'EOF'
{
  "format": "kiln/1",
  "name": "custom_init",
  "dims": {"B": 2, "T": 4},
  "inputs": {"x": {"shape": ["B", "T", 64], "dtype": "f32"}},
  "layers": [
    {"name": "enc", "op": "encoder_layer", "in": "x", "repeat": 3, "heads": 4, "hidden": 128},
    {"name": "ff", "op": "feed_forward", "hidden": 128},
    {"name": "one_layer", "op": "encoder_layer", "repeat": 1, "heads": 4, "hidden": 128},
    {"name": "rms", "op": "rmsnorm"},
    {"name": "u", "op": "param", "shape": [64, 64], "init": "uniform", "bound": 0.5},
    {"name": "n", "op": "param", "shape": [64, 64], "init": "normal", "std": 0.3},
    {"name": "one", "op": "param", "shape": [3, "T"], "init": "ones"},
    {"name": "zero", "op": "param", "shape": [5], "init": "zeros"},
    {"name": "y", "op": "matmul", "in": ["rms", "u"]},
    {"name": "z", "op": "matmul", "in": ["y", "n"]}
  ],
  "outputs": ["z", "one", "zero"],
  "init": {"seed": 5, "std": 0.05}
}
EOF
if run "init custom.json" "$kiln" init custom.json -o custom.safetensors; then
    "$py" - "$src/scripts" custom.safetensors <<'EOF' || fail "custom.json's parameters (above)"
import math, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import safetensors_np

w = safetensors_np.read(sys.argv[2])
D, H, STD = 64, 128, 0.05
bad = []
def near(name, std):
    if name not in w:
        bad.append(f"{name} missing")
        return
    s = float(w[name].std())
    if abs(s - std) > 0.06 * std:
        bad.append(f"{name}: std {s:.5f}, expected {std:.5f}")
for i in range(3):
    near(f"enc.{i}.attn.q.weight", STD)
    near(f"enc.{i}.attn.o.weight", STD / math.sqrt(6))    # repeat 3: /√(2·3)
    near(f"enc.{i}.ff.fc1.weight", STD)
    near(f"enc.{i}.ff.fc2.weight", STD / math.sqrt(6))
near("ff.fc1.weight", STD)
near("ff.fc2.weight", STD)                               # not repeated: plain std
near("one_layer.0.attn.o.weight", STD / math.sqrt(2))   # repeat 1: a stack of one, as
near("one_layer.0.ff.fc2.weight", STD / math.sqrt(2))   # GPT-2 with n_layer = 1 scales
near("n", 0.3)
if "rms.weight" not in w or not (w["rms.weight"] == 1).all():
    bad.append("rms.weight should be all ones")
if "rms.bias" in w:
    bad.append("rmsnorm has no bias")
u = w.get("u")
if u is None or u.shape != (64, 64) or u.min() < -0.5 or u.max() > 0.5 or u.max() - u.min() < 0.9:
    bad.append("u should be uniform in [-0.5, 0.5]")
elif abs(float(u.std()) - 0.5 / math.sqrt(3)) > 0.02:
    bad.append(f"u: std {float(u.std()):.4f}, a uniform(-0.5, 0.5) has 0.2887")
if "one" not in w or w["one"].shape != (3, 4) or not (w["one"] == 1).all():
    bad.append("one should be ones of shape (3, T=4)")
if "zero" not in w or w["zero"].shape != (5,) or not (w["zero"] == 0).all():
    bad.append("zero should be zeros of shape (5,)")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
EOF
fi

# ---- failures: no output file is created or touched ---------------------------------------
printf 'keep me\n' >keep.safetensors
cp keep.safetensors keep.orig
printf '{"format": "kiln/1", "name": "m", "layers": [' >broken.json
set +e
"$kiln" init broken.json -o keep.safetensors 2>err.txt
status=$?
set -e
[[ $status -eq 1 ]] || fail "init of a broken model: exit $status, expected 1"
cmp -s keep.safetensors keep.orig || fail "init of a broken model changed the existing -o file"
grep -q 'broken.json' err.txt || fail "init of a broken model: the message does not name broken.json: $(head -n 3 err.txt)"

finish
