#!/usr/bin/python3
"""make_bad.py KIND NAME OUTDIR — writes the files of one hostile case into OUTDIR.

Binary and huge inputs are not committed: they are generated here, at test time, from
the case name (see README.md). Every case writes the good base files first

    OUTDIR/w.safetensors   weights of base/model.json (emb.weight, proj.weight, proj.bias)
    OUTDIR/x.safetensors   inputs of base/model.json (tokens: i32 [2, 4])

and then its bad file:

    model    OUTDIR/NAME.json             (or a directory of that name, or nothing)
    weights  OUTDIR/NAME.safetensors      given as --weights
    inputs   OUTDIR/NAME.safetensors      given as --inputs
    cli      OUTDIR/outdir/, an empty directory (the .args file uses the base files)

An unknown case name is an error, so a typo in a file name cannot pass silently.
"""
import json
import os
import struct
import sys

import random

VOCAB, DIM, OUT = 16, 8, 5

# ---- safetensors building blocks (deliberately able to write broken files) -------------


def header_bytes(header):
    """A header dict (or raw bytes) as it sits in the file, space-padded to 8 bytes."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return h + b" " * (-len(h) % 8)


def st_file(header, data=b"", length=None):
    """8-byte little-endian header length, header, data. `length` overrides the length."""
    h = header_bytes(header)
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + data


def entries(tensors):
    """name → (dtype, shape, raw bytes) in order → (header dict, data bytes)."""
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    return header, b"".join(blobs)


def tensor(dtype, shape, values):
    """(safetensors dtype, shape, little-endian bytes) of a flat list of values."""
    code = {"F32": "f", "F64": "d", "I32": "i", "I64": "q"}[dtype]
    return (dtype, tuple(shape), struct.pack(f"<{len(values)}{code}", *values))


def good_weights():
    rng = random.Random(0)

    def normal(n):
        return [rng.gauss(0, 0.02) for _ in range(n)]

    return {
        "emb.weight": tensor("F32", (VOCAB, DIM), normal(VOCAB * DIM)),
        "proj.weight": tensor("F32", (OUT, DIM), normal(OUT * DIM)),
        "proj.bias": tensor("F32", (OUT,), [0.0] * OUT),
    }


# the tokens (2, 4) of a good inputs file, row-major
GOOD_TOKENS = [1, 2, 3, 4, 15, 0, 7, 9]


def tokens(dtype="I32", shape=(2, 4), values=GOOD_TOKENS):
    return tensor(dtype, shape, values)


def write(path, content):
    with open(path, "wb") as f:
        f.write(content)


def with_header(tensors, edit):
    """A valid file whose header dict was changed by edit(header) (data unchanged)."""
    header, data = entries(tensors)
    edit(header)
    return st_file(header, data)


def set_field(name, field, value):
    def edit(h):
        h[name][field] = value
    return edit


# ---- weights cases (the bad file is --weights) -------------------------------------------


def w_good():
    h, d = entries(good_weights())
    return st_file(h, d)


def deep_header(depth):
    return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"


def dup_key_header():
    h, d = entries(good_weights())
    text = json.dumps(h)
    extra = json.dumps({"proj.bias": h["proj.bias"]})[1:-1]
    return st_file(text[:-1].encode() + b", " + extra.encode() + b"}", d)


def overlapping():
    h, d = entries(good_weights())
    b, _ = h["proj.weight"]["data_offsets"]
    h["proj.bias"]["data_offsets"] = [b, b + OUT * 4]  # inside proj.weight's bytes
    return st_file(h, d)


def f64_out_of_range():
    w = good_weights()
    a = [0.0] * OUT
    a[3] = 1e300
    w["proj.bias"] = tensor("F64", (OUT,), a)
    h, d = entries(w)
    return st_file(h, d)


WEIGHTS = {
    # the file ends inside the last tensor's data
    "truncated": lambda: w_good()[:-10],
    # the file ends inside the header
    "truncated_header": lambda: w_good()[:40],
    "header_len_past_eof": lambda: st_file(entries(good_weights())[0], entries(good_weights())[1],
                                           length=len(header_bytes(entries(good_weights())[0])) + 100000),
    "header_len_2_63": lambda: st_file(b"{}", b"", length=1 << 63),
    "header_len_max": lambda: st_file(b"{}", b"", length=(1 << 64) - 1),
    "short_file": lambda: b"\x10\x00\x00",
    "empty_file": lambda: b"",
    "header_not_json": lambda: st_file(b'{"emb.weight": {"dtype": "F32", "shape": [16, 8], ', b""),
    "header_not_object": lambda: st_file(b"[1, 2, 3]", b""),
    "header_nul_bytes": lambda: st_file(b"\x00" * 16, b""),
    "header_deep_nesting": lambda: st_file(deep_header(100000), b""),
    "offsets_past_end": lambda: with_header(good_weights(), set_field("proj.bias", "data_offsets",
                                                                      [(VOCAB + OUT) * DIM * 4, (VOCAB + OUT) * DIM * 4 + 4000])),
    "offsets_reversed": lambda: with_header(good_weights(), set_field("proj.bias", "data_offsets", [20, 0])),
    "offsets_not_integers": lambda: with_header(good_weights(), set_field("proj.bias", "data_offsets", [0.5, 20])),
    "overlapping_offsets": overlapping,
    # shape [5, 8] of F32 is 160 bytes, the offsets give 156
    "size_mismatch": lambda: with_header(good_weights(), set_field("proj.weight", "data_offsets",
                                                                   [VOCAB * DIM * 4, VOCAB * DIM * 4 + 156])),
    "unknown_dtype": lambda: with_header(good_weights(), set_field("proj.bias", "dtype", "Q4_K")),
    "rank9": lambda: with_header(good_weights(), set_field("proj.bias", "shape", [5, 1, 1, 1, 1, 1, 1, 1, 1])),
    "negative_dim": lambda: with_header(good_weights(), set_field("proj.weight", "shape", [-5, -8])),
    "shape_overflow": lambda: with_header(good_weights(), set_field("proj.weight", "shape", [1 << 40, 1 << 40])),
    "duplicate_name": dup_key_header,
    "f64_out_of_range": f64_out_of_range,
    "missing_param": lambda: st_file(*entries({k: v for k, v in good_weights().items() if k != "proj.bias"})),
    "wrong_param_shape": lambda: st_file(*entries({**good_weights(),
                                                   "proj.weight": tensor("F32", (DIM, OUT), [0.0] * (DIM * OUT))})),
    "param_as_i32": lambda: st_file(*entries({**good_weights(), "proj.bias": tensor("I32", (OUT,), [0] * OUT)})),
    # a model file given where a weights file belongs
    "model_file_as_weights": lambda: open(os.path.join(os.path.dirname(__file__), "base", "model.json"), "rb").read(),
}

# ---- inputs cases (the bad file is --inputs) ---------------------------------------------


def tokens_with(value):
    t = list(GOOD_TOKENS)
    t[1 * 4 + 2] = value
    return st_file(*entries({"tokens": tokens(values=t)}))


def i64_tokens_out_of_range():
    t = list(GOOD_TOKENS)
    t[0 * 4 + 1] = 1 << 40
    return st_file(*entries({"tokens": tokens("I64", values=t)}))


INPUTS = {
    "f32_tokens": lambda: st_file(*entries({"tokens": tokens("F32")})),
    "token_negative": lambda: tokens_with(-1),
    "token_too_large": lambda: tokens_with(VOCAB),
    "token_int_max": lambda: tokens_with(2**31 - 1),
    "token_int_min": lambda: tokens_with(-2**31),
    "i64_tokens_out_of_range": i64_tokens_out_of_range,
    "missing_input": lambda: st_file(*entries({"toks": tokens()})),
    # every input is there, plus a tensor the model has no input for (a misspelt mask?)
    "extra_input": lambda: st_file(*entries({"tokens": tokens(), "tokenz": tokens()})),
    "wrong_rank": lambda: st_file(*entries({"tokens": tokens(shape=(8,))})),
    "truncated_inputs": lambda: st_file(*entries({"tokens": tokens()}))[:-3],
}

# ---- model cases that cannot be committed as text ----------------------------------------

BASE_MODEL = """{
  "format": "kiln/1",
  "name": "m",
  "dims": {"B": 2, "T": 4},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "emb", "op": "embedding", "in": "tokens", "vocab": 16, "dim": 8}
  ],
  "outputs": ["emb"]
}
"""


def model_text(old, new):
    """BASE_MODEL with its first `old` replaced by `new` (str or bytes) → bytes."""
    base = BASE_MODEL.encode()
    old = old.encode() if isinstance(old, str) else old
    new = new.encode() if isinstance(new, str) else new
    assert old in base
    return base.replace(old, new, 1)


def model_deep(depth):
    # an unknown key whose value is `depth` nested arrays
    return model_text('"outputs": ["emb"]', '"outputs": ["emb"],\n  "extra": ' + "[" * depth + "]" * depth)


MODELS = {
    # line 3, column 12 is the byte 0xff inside the name string (column 11 is the quote)
    "syntax_invalid_utf8": lambda: model_text('"name": "m"', b'"name": "\xffm"'),
    # line 3, column 3: a NUL byte where the "name" key should start
    "syntax_nul_byte": lambda: model_text('  "name": "m"', b'  \x00"name": "m"'),
    "deep_nesting_300": lambda: model_deep(300),
    "deep_nesting_100k": lambda: model_deep(100000),
    # a 1 MB string as the model's name (not a valid name)
    "long_string": lambda: model_text('"name": "m"', '"name": "' + "a" * (1 << 20) + "-" + '"'),
    # a 1 MB key
    "long_key": lambda: model_text('"outputs": ["emb"]', '"outputs": ["emb"],\n  "' + "k" * (1 << 20) + '": 1'),
    # 20000 layers: many diagnostics, none may be lost silently or crash
    "many_errors": lambda: model_text('"outputs": ["emb"]', '"outputs": ["emb"],\n  "bogus": 1')
    .replace(b'"layers": [', b'"layers": [' + b'{"name": "x", "op": "nope"},\n' * 20000),
}


def make_model(name, outdir):
    path = os.path.join(outdir, name + ".json")
    if name == "directory":
        os.mkdir(path)
    elif name == "nonexistent":
        pass
    elif name in MODELS:
        write(path, MODELS[name]())
    elif os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), "model", name + ".json")):
        pass  # a committed model file: nothing to generate
    else:
        sys.exit(f"make_bad.py: no generated model case '{name}'")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    kind, name, outdir = sys.argv[1:]
    write(os.path.join(outdir, "w.safetensors"), w_good())
    write(os.path.join(outdir, "x.safetensors"), st_file(*entries({"tokens": tokens()})))
    bad = os.path.join(outdir, name + ".safetensors")
    if kind == "model":
        make_model(name, outdir)
    elif kind == "weights":
        if name == "nonexistent_weights":
            return
        if name == "directory_weights":
            os.mkdir(bad)
            return
        if name not in WEIGHTS:
            sys.exit(f"make_bad.py: no weights case '{name}'")
        write(bad, WEIGHTS[name]())
    elif kind == "inputs":
        if name not in INPUTS:
            sys.exit(f"make_bad.py: no inputs case '{name}'")
        write(bad, INPUTS[name]())
    elif kind == "cli":
        os.mkdir(os.path.join(outdir, "outdir"))  # for --out / -o naming a directory
    else:
        sys.exit(f"make_bad.py: unknown kind '{kind}'")


if __name__ == "__main__":
    main()
