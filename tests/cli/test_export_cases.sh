#!/usr/bin/env bash
# test_export_cases.sh KILN SRCDIR — every conformance case's model exported with
# `kiln compile -o case.so --header case.h` and called through ctypes must give exactly
# `kiln run`'s bits (JIT and AOT compile the same module for the same host CPU). This
# checks what a hand-written deploy program cannot for 26 different models: the
# parameter table and NAME_load against each weights file, the argument order of
# NAME_forward (inputs the outputs need, in model order, then every output), f32 and i32
# inputs, several outputs, and the header's description of all of them.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts
/usr/bin/python3 - "$kiln" "$src/tests/conformance/cases" <<'EOF_PY'
import ctypes, json, os, re, subprocess, sys
import numpy as np
import safetensors_np as st

kiln, cases = sys.argv[1], sys.argv[2]
failures = checked = 0


def fail(case, msg):
    global failures
    failures += 1
    print(f"FAIL: {case}: {msg}")


def aligned(nbytes):
    """A zeroed 64-byte aligned buffer (numpy array view) of nbytes."""
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + nbytes]


def dims_of(model, inputs):
    """-D bindings from the inputs' shapes, as kiln run binds them."""
    out = {}
    for name, decl in model.get("inputs", {}).items():
        if name not in inputs:
            continue
        for d, v in zip(decl["shape"], inputs[name].shape):
            if isinstance(d, str):
                out[d] = v
    return out


def header_args(text, section):
    """[(name, dtype, shape)] of the header comment's Inputs: or Outputs: block."""
    block = text.split(f" * {section}:\n", 1)[1]
    args = []
    for line in block.splitlines():
        m = re.match(r" \*   (\S+)\s+(i32|f32)\[([0-9, ]*)\]$", line)
        if not m:
            break
        shape = tuple(int(x) for x in m.group(3).split(",") if x.strip())
        args.append((m.group(1), m.group(2), shape))
    return args


# the sanitizer build, where each compile costs several times more, exports every other
# case; the plain build all of them (CI time)
sanitized = b"libasan" in subprocess.run(["readelf", "-d", kiln], capture_output=True).stdout
for case in sorted(os.listdir(cases))[:: 2 if sanitized else 1]:
    d = os.path.join(cases, case)
    if not os.path.exists(os.path.join(d, "case.json")):
        continue
    model_path, weights = os.path.join(d, "model.json"), os.path.join(d, "weights.safetensors")
    model = json.load(open(model_path))
    inputs = st.read(os.path.join(d, "inputs.safetensors"))
    defines = [x for k, v in dims_of(model, inputs).items() for x in ("-D", f"{k}={v}")]
    so, hdr, out = f"{case}.so", f"{case}.h", f"{case}.out.safetensors"
    r = subprocess.run([kiln, "compile", model_path, *defines, "-o", so, "--header", hdr],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(case, f"kiln compile: {r.stderr.strip()[:300]}")
        continue
    r = subprocess.run([kiln, "run", model_path, "--weights", weights, "--inputs",
                        os.path.join(d, "inputs.safetensors"), "--out", out], capture_output=True, text=True)
    if r.returncode != 0:
        fail(case, f"kiln run: {r.stderr.strip()[:300]}")
        continue
    expected = st.read(out)
    text = open(hdr).read()
    name = re.search(r"^int (\w+)_forward\(", text, re.M).group(1)
    up = name.upper()
    params_bytes = int(re.search(rf"#define {up}_PARAMS_BYTES (\d+)", text).group(1))
    ws_bytes = int(re.search(rf"#define {up}_WORKSPACE_BYTES (\d+)", text).group(1))
    lib = ctypes.CDLL(os.path.abspath(so))
    params, workspace = aligned(params_bytes), aligned(ws_bytes)
    rc = getattr(lib, f"{name}_load")(ctypes.c_void_p(params.ctypes.data), weights.encode())
    if rc != 0:
        fail(case, f"{name}_load returned {rc}")
        continue
    args = [ctypes.c_void_p(params.ctypes.data), ctypes.c_void_p(workspace.ctypes.data)]
    keep = []
    for iname, dtype, shape in header_args(text, "Inputs"):
        a = np.ascontiguousarray(inputs[iname].astype(np.int32 if dtype == "i32" else np.float32))
        if a.shape != shape:
            fail(case, f"input {iname}: file {a.shape}, header {shape}")
        keep.append(a)
        args.append(ctypes.c_void_p(a.ctypes.data))
    outs = []
    for oname, dtype, shape in header_args(text, "Outputs"):
        o = np.full(shape, -1, dtype=np.int32) if dtype == "i32" else np.full(shape, np.nan, dtype=np.float32)
        outs.append((oname, o))
        args.append(ctypes.c_void_p(o.ctypes.data))
    forward = getattr(lib, f"{name}_forward")
    forward.restype = ctypes.c_int
    rc = forward(*args)
    if rc != 0:
        fail(case, f"{name}_forward returned {rc}")
        continue
    if [n for n, _ in outs] != [n for n in expected]:
        fail(case, f"outputs {[n for n, _ in outs]} vs kiln run's {list(expected)}")
    for oname, o in outs:
        e = expected[oname].astype(o.dtype)
        if o.shape != e.shape or not np.array_equal(o.view(np.uint32), e.view(np.uint32)):
            diff = np.abs(o.astype(np.float64) - e).max() if o.shape == e.shape else "shape"
            fail(case, f"output {oname} differs from kiln run's (max |diff| {diff})")

    checked += 1

if checked < (10 if sanitized else 20):
    fail("cases", f"only {checked} cases checked")
print(f"test_export_cases: {checked} models, {'ok' if failures == 0 else f'{failures} failure(s)'}")
sys.exit(1 if failures else 0)
EOF_PY
