#!/usr/bin/python3
"""torch_memory.py WEIGHTS MODEL B T STEPS [--checkpoint] — PyTorch's side of all.py's
`memory` part: train torch_gpt.TrainableGPT (char_gpt with `kiln init`'s weights and the
model file's AdamW and clipping) for STEPS steps on random tokens at batch B, window T,
then print one JSON line: the RSS after importing torch and after building the model and
optimizer (MiB, from /proc/self/status), and the process's peak (VmHWM).

all.py measures the peak itself, from the rusage of this process when it exits (the
same way as for `kiln train`); the figures printed here only say where it goes.
--checkpoint wraps each block in torch.utils.checkpoint (use_reentrant=False), PyTorch's
counterpart of `kiln train --checkpoint-activations` (printed for information).

One process per measurement: a peak cannot be reset. Thread settings come from the
environment all.py gives this process (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, ...).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))


def status_mib(key):
    """VmRSS / VmHWM of this process in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return None


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    checkpoint = "--checkpoint" in sys.argv[1:]
    weights, model_path, B, T, steps = args[0], args[1], int(args[2]), int(args[3]), int(args[4])

    import numpy as np
    import torch
    import torch.nn.functional as F
    import torch.utils.checkpoint

    import safetensors_np
    from torch_gpt import TrainableGPT, model_shape, torch_step

    after_import = status_mib("VmRSS")

    class CheckpointedGPT(TrainableGPT):
        """TrainableGPT recomputing each block's activations in the backward pass."""

        def block(self, x, i):
            b = f"blocks.{i}"
            x = x + self.attn(self.ln(x, b + ".ln1"), b + ".attn")
            h = F.gelu(self.linear(self.ln(x, b + ".ln2"), b + ".ff.fc1"), approximate="tanh")
            return x + self.linear(h, b + ".ff.fc2")

        def forward(self, tokens):
            T = tokens.shape[1]
            x = self.w["wte.weight"][tokens] + self.w["wpe.weight"][:T]
            for i in range(self.layers):
                x = torch.utils.checkpoint.checkpoint(self.block, x, i, use_reentrant=False)
            return F.linear(self.ln(x, "ln_f"), self.w["wte.weight"])

    layers, heads, _ = model_shape(model_path)
    with open(model_path) as f:
        train_cfg = json.load(f)["train"]
    cls = CheckpointedGPT if checkpoint else TrainableGPT
    model = cls(safetensors_np.read(weights), train_cfg, layers, heads)
    opt = model.optimizer()
    after_model = status_mib("VmRSS")

    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        data = torch.from_numpy(rng.integers(0, 256, size=(B, T + 1)).astype(np.int64))
        losses.append(torch_step(model, opt, data[:, :-1].contiguous(), data[:, 1:].contiguous(),
                                 train_cfg.get("lr", 1e-3)))
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "after_import_mib": after_import, "after_model_mib": after_model,
                      "hwm_mib": status_mib("VmHWM"), "losses": losses}), flush=True)


if __name__ == "__main__":
    main()
