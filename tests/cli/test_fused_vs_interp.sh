#!/usr/bin/env bash
# test_fused_vs_interp.sh KILN SRCDIR — small graphs that fusion (passes/fuse.c, the GEMM
# epilogue, loop kernels) once got wrong, found by a differential audit of compiled code
# against the interpreter; each runs compiled and with --interp:
#   - three graphs whose fusion made a cyclic kernel graph and aborted (pick < nk): a loop
#     group reading a value of a group that also holds a later node; one weight in x·w and
#     y·wᵀ with --grads (sibling GEMMs); rank-0 values with three mse losses and --grads.
#     They must run and agree with the interpreter;
#   - matmul → scale by 0 and by -0, which the GEMM epilogue once read as no scale: the
#     same bits as the interpreter, signs of zero included (small integers: the products
#     are exact); and a scale by 0 before a matmul, whose gradient is such a scale, with
#     --grads;
#   - matmul + mul(c, d): the same bits with the GEMM epilogue, with --disable-pass
#     epilogue (the add then joins mul's loop kernel, which once made an FMA of them) and
#     with --disable-pass fuse (docs/codegen.md, GEMM epilogues).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts

# the models and their inputs; no model has parameters
"$py" - <<'EOF'
import json
import numpy as np
import safetensors_np as st
rng = np.random.default_rng(7)
f32 = lambda shape: {"shape": list(shape), "dtype": "f32"}
head = {"format": "kiln/1"}
def case(name, model, inputs):
    json.dump(dict(head, name=name, **model), open(f"{name}.json", "w"))
    st.write(f"{name}.in.safetensors", {k: np.asarray(v, "<f4") for k, v in inputs.items()})
st.write("none.safetensors", {})
normal = lambda *shape: rng.standard_normal(shape).astype("<f4")

case("cycle_loop", {
    "inputs": {"a": f32([4]), "x": f32([3, 4]), "b": f32([3, 4])},
    "layers": [{"name": "u", "op": "neg", "in": "a"}, {"name": "v", "op": "neg", "in": "x"},
               {"name": "s", "op": "sum", "in": "v", "axes": [0]}, {"name": "w", "op": "add", "in": ["s", "u"]},
               {"name": "u2", "op": "add", "in": ["u", "b"]}, {"name": "z", "op": "add", "in": ["u2", "v"]}],
    "outputs": ["w", "z"]}, {"a": normal(4), "x": normal(3, 4), "b": normal(3, 4)})
case("cycle_siblings", {
    "inputs": {k: f32([2, 2]) for k in ("x", "y", "w", "t1", "t2")},
    "layers": [{"name": "a", "op": "matmul", "in": ["x", "w"]},
               {"name": "c", "op": "matmul", "in": ["y", "w"], "transpose_b": True}],
    "outputs": ["a", "c"],
    "losses": [{"op": "mse", "in": ["a", "t1"]}, {"op": "mse", "in": ["c", "t2"]}]},
    {k: normal(2, 2) for k in ("x", "y", "w", "t1", "t2")})
case("cycle_grads", {
    "inputs": {k: f32([]) for k in ("x1", "x44", "x46", "x50", "p19", "gt22")},
    "layers": [{"name": "sca2", "op": "scale", "in": "x1", "by": -2.5},
               {"name": "bro10", "op": "broadcast", "in": "sca2", "shape": []},
               {"name": "max13", "op": "max", "in": "bro10", "axes": []},
               {"name": "whe23", "op": "where", "in": ["gt22", "bro10", "p19"]},
               {"name": "max38", "op": "max", "in": "p19", "axes": []}],
    "outputs": ["max38"],
    "losses": [{"op": "mse", "in": ["max13", "x44"]}, {"op": "mse", "in": ["whe23", "x46"]},
               {"op": "mse", "in": ["max38", "x50"]}]},
    {"x1": 0.37, "x44": -0.53, "x46": 0.0, "x50": 1.43, "p19": 1.5, "gt22": 1.0})
small = lambda *shape: rng.integers(-4, 5, shape).astype("<f4")
case("scale_zero", {
    "inputs": {"a": f32([5, 7]), "b": f32([7, 6])},
    "layers": [{"name": "m", "op": "matmul", "in": ["a", "b"]}, {"name": "z", "op": "scale", "in": "m", "by": 0},
               {"name": "n", "op": "matmul", "in": ["b", "a"], "transpose_a": True, "transpose_b": True},
               {"name": "nz", "op": "scale", "in": "n", "by": -0.0}],
    "outputs": ["z", "nz"]}, {"a": small(5, 7), "b": small(7, 6)})
case("scale_zero_grad", {  # the backward's scale(g·wᵀ) by=0 once joined that GEMM's epilogue
    "inputs": {k: f32([2, 2]) for k in "xwt"},
    "layers": [{"name": "s", "op": "scale", "in": "x", "by": 0}, {"name": "m", "op": "matmul", "in": ["s", "w"]}],
    "outputs": ["m"], "losses": [{"op": "mse", "in": ["m", "t"]}]}, {k: normal(2, 2) for k in "xwt"})
case("epilogue_bits", {
    "inputs": {k: f32([16, 16]) for k in "abcd"},
    "layers": [{"name": "m", "op": "matmul", "in": ["a", "b"]}, {"name": "p", "op": "mul", "in": ["c", "d"]},
               {"name": "o", "op": "add", "in": ["m", "p"]}],
    "outputs": ["o"]}, {k: normal(16, 16) for k in "abcd"})
EOF

# out NAME TAG [FLAGS...] — runs model NAME (its inputs, no weights) into NAME.TAG.safetensors
out() {
    local name=$1 tag=$2
    shift 2
    kiln_ok "$name $*" run "$name.json" --weights none.safetensors --inputs "$name.in.safetensors" \
        --out "$name.$tag.safetensors" "$@"
}
# same A B EXACT — two output files agree: bit for bit when EXACT is 1, else within rounding
same() {
    "$py" - "$@" <<'EOF' || fail "$1 vs $2 (above)"
import sys
import numpy as np
import safetensors_np as st
a, b = st.read(sys.argv[1]), st.read(sys.argv[2])
exact = sys.argv[3] == "1"
bad = [f"tensors {sorted(a)} vs {sorted(b)}"] if set(a) != set(b) else []
for k in sorted(set(a) & set(b)):
    x, y = a[k], b[k]
    if exact and x.tobytes() != y.tobytes():
        i = np.flatnonzero(x.view(np.uint32) != y.view(np.uint32))
        bad.append(f"{k}: {i.size} elements differ in their bits, e.g. {x.ravel()[i[0]]!r} vs {y.ravel()[i[0]]!r}")
    elif not exact and not np.allclose(x, y, rtol=1e-5, atol=1e-6):
        bad.append(f"{k}: differs by up to {np.abs(x - y).max():.3e}")
for m in bad:
    print("  " + m)
sys.exit(1 if bad else 0)
EOF
}

out cycle_loop c && out cycle_loop i --interp && same cycle_loop.c.safetensors cycle_loop.i.safetensors 0
for name in cycle_siblings cycle_grads; do
    out $name c --grads && out $name i --grads --interp && same $name.c.safetensors $name.i.safetensors 0
done
out scale_zero c && out scale_zero i --interp && same scale_zero.c.safetensors scale_zero.i.safetensors 1
out scale_zero_grad c --grads && out scale_zero_grad i --grads --interp &&
    same scale_zero_grad.c.safetensors scale_zero_grad.i.safetensors 0
out epilogue_bits c && out epilogue_bits noepi --disable-pass epilogue && out epilogue_bits nofuse --disable-pass fuse && {
    same epilogue_bits.c.safetensors epilogue_bits.noepi.safetensors 1
    same epilogue_bits.c.safetensors epilogue_bits.nofuse.safetensors 1
}
finish
