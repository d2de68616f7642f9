#!/usr/bin/env python3
"""make_prompt.py OUT.safetensors T TEXT — byte tokens of TEXT (cut or padded with spaces
to T) as the `tokens` input (1, T) of a byte-level model."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_np  # noqa: E402

out, t, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
b = text.encode()[:t].ljust(t, b" ")
safetensors_np.write(out, {"tokens": np.frombuffer(b, dtype=np.uint8).astype("<i4").reshape(1, t)})
