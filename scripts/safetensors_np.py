"""Tiny safetensors reader/writer with numpy only, for kiln's scripts and tests."""
import json
import struct

import numpy as np

_DT = {"F32": "<f4", "I32": "<i4", "F16": "<f2", "F64": "<f8", "I64": "<i8"}
_NAME = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32"}


def read(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        a = np.frombuffer(data[8 + n + b:8 + n + e], dtype=_DT[info["dtype"]])
        out[name] = a.reshape(info["shape"])
    return out


def write(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.require(a, requirements="C")  # keeps a 0-d array 0-d (ascontiguousarray makes it 1-d)
        raw = a.tobytes()
        header[name] = {"dtype": _NAME[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
