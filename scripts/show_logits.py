#!/usr/bin/env python3
"""show_logits.py Y.safetensors — summarise `logits` (B, T, V): shape, range, and the most
likely next byte at the last position (an untrained model gives noise, by design)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import safetensors_np  # noqa: E402

y = safetensors_np.read(sys.argv[1])["logits"]
print(f"logits {list(y.shape)}: min {y.min():.4f} max {y.max():.4f} mean {y.mean():.4f} finite {np.isfinite(y).all()}")
last = y[0, -1]
top = np.argsort(-last)[:5]
print("top next bytes at the last position:", ", ".join(f"{int(i)} ({last[i]:.3f})" for i in top))
