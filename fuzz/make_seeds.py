#!/usr/bin/env python3
"""make_seeds.py — (re)builds the seed corpus in fuzz/corpus/ from the repository's
examples and tests, plus a few hand-made inputs for formats the tests only hold inside
scripts (checkpoint metadata, data files, tokenizer lines). Deterministic; run from
anywhere: python3 fuzz/make_seeds.py. Keep the corpus small: a seed is a starting point,
the fuzzer finds the rest."""
import json
import os
import shutil
import struct

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, name, src):
    with open(os.path.join(root, src), "rb") as f:
        put(target, name, f.read())


def safetensors(tensors, meta=None):
    """tensors: list of (name, dtype, shape, bytes)"""
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


shutil.rmtree(out, ignore_errors=True)

# model: the examples, the hostile base model and a spread of conformance cases
for name in ("char_gpt", "bert_classifier", "translator"):
    copy("model", name + ".json", "examples/%s.json" % name)
copy("model", "hostile_base.json", "tests/hostile/base/model.json")
cases = os.path.join(root, "tests/conformance/cases")
for case in sorted(os.listdir(cases)):
    if os.path.exists(os.path.join(cases, case, "model.json")):
        with open(os.path.join(cases, case, "model.json")) as f:
            compact = json.dumps(json.load(f), separators=(",", ":"))  # smaller seeds, same content
        put("model", case + ".json", compact)

# ir: the golden IR files
for sub in ("ir", "simplify"):
    d = os.path.join(root, "tests/golden", sub)
    for name in sorted(os.listdir(d)):
        if name.endswith(".kir") and os.path.getsize(os.path.join(d, name)) < 4000:
            copy("ir", sub + "_" + name, "tests/golden/%s/%s" % (sub, name))

# safetensors: weights and inputs of two cases, every dtype, a checkpoint's metadata
for case in ("007_linear", "008_embedding_tied"):
    copy("safetensors", case + "_weights.safetensors", "tests/conformance/cases/%s/weights.safetensors" % case)
    copy("safetensors", case + "_inputs.safetensors", "tests/conformance/cases/%s/inputs.safetensors" % case)
f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, 7)
put("safetensors", "dtypes.safetensors", safetensors([
    ("w", "F32", [2, 3], f32),
    ("b", "F16", [3], struct.pack("<3H", 0x3C00, 0xC000, 0x7C00)),
    ("c", "BF16", [2], struct.pack("<2H", 0x3F80, 0x4000)),
    ("d", "F64", [1], struct.pack("<d", 0.25)),
    ("e", "I64", [2], struct.pack("<2q", 5, -1)),
    ("f", "U8", [3], bytes([1, 2, 255])),
    ("g", "BOOL", [1], bytes([1])),
    ("x", "F32", [], struct.pack("<f", 9)),
]))
put("safetensors", "checkpoint.safetensors", safetensors(
    [("w", "F32", [2, 3], f32), ("optim.step", "F32", [], struct.pack("<f", 3))],
    {"step": "3", "task": "clm", "tokenizer": "kiln-tokenizer/1 bpe 2 104 105 256 33",
     "labels": "kiln-labels/1 names 2\tneg\tpos", "data_state": "kiln-batch/1 0 1 5 1 2 3 4",
     "model": "{\"format\":\"kiln/1\"}"}))
put("safetensors", "empty.safetensors", safetensors([]))

# tokenizer: mode byte, parameter byte, text (fuzz_tokenizer.c)
put("tokenizer", "byte", b"\x00\x00kiln-tokenizer/1 byte")
put("tokenizer", "char", b"\x00\x00kiln-tokenizer/1 char 4 32 97 98 65533")
put("tokenizer", "bpe", b"\x00\x00kiln-tokenizer/1 bpe 2 104 105 256 33")
put("tokenizer", "labels_names", b"\x01\x00kiln-labels/1 names 3\tneg\tpos\tmixed")
put("tokenizer", "labels_numeric", b"\x01\x00kiln-labels/1 numeric 4")
text = "the cat sat on the mat; the cat ate 12 rats.\nLa m\u00eame chose \u2014 \u00e9t\u00e9 \U0001F600!\n"
put("tokenizer", "train_char", b"\x02\x00" + text.encode())
put("tokenizer", "train_bpe", b"\x03\x28" + text.encode())
put("tokenizer", "train_bpe_bytes", b"\x03\x10" + bytes(range(256)) + b"aaaaabbbbbabab")

# data: pick byte (task + 6 * tokenizer + 18 * bin), then the file (fuzz_data.c)
put("data", "clm_text_byte", b"\x00" + text.encode())
put("data", "mlm_text_bpe", bytes([1 + 12]) + text.encode() * 2)
put("data", "classify_tsv_char", bytes([2 + 6]) + b"pos\tgood film\nneg\tbad film\r\n\npos\tfine\n")
put("data", "classify_numeric", bytes([2]) + b"0\tgood film\n1\tbad film\n2\tmeh\n")
put("data", "pairs_tsv", bytes([3]) + b"a cat\ta dog\nthe sun\tthe moon\n")
put("data", "seq2seq_tsv_bpe", bytes([4 + 12]) + b"hello\tbonjour\ngood night\tbonne nuit\n")
put("data", "span_tsv", bytes([5]) + b"the cat sat on the mat\twhere did it sit\ton the mat\n")
put("data", "clm_bin", bytes([18]) + struct.pack("<16H", *range(16)))
put("data", "mlm_bin", bytes([19]) + struct.pack("<12H", *[7, 8, 9, 10] * 3))

# bind: inputs files for the fixed model of fuzz_bind.c (tokens [B, T], vocab 16)
put("bind", "tokens_2x4.safetensors", safetensors([("tokens", "I32", [2, 4], struct.pack("<8i", *range(8)))]))
put("bind", "tokens_1x3_i64.safetensors", safetensors([("tokens", "I64", [1, 3], struct.pack("<3q", 15, 0, 3))]))
put("bind", "tokens_and_weights.safetensors", safetensors([
    ("tokens", "I32", [1, 2], struct.pack("<2i", 1, 2)),
    ("emb.weight", "F32", [16, 8], struct.pack("<128f", *[0.01 * i for i in range(128)])),
    ("proj.weight", "F32", [5, 8], struct.pack("<40f", *[0.02 * i for i in range(40)])),
    ("proj.bias", "F32", [5], struct.pack("<5f", 0, 0, 0, 0, 0)),
]))
put("bind", "tokens_f32.safetensors", safetensors([("tokens", "F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4))]))
