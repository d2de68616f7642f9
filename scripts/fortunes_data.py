#!/usr/bin/env python3
"""fortunes_data.py OUT [TRAIN_LIMIT [HELD_LIMIT]] — the English fortunes as training text.

The demo and the char-level examples train on the same text: every file of Debian's
`fortunes` package in /usr/share/games/fortunes except the ASCII art and fortunes-zh's
Chinese poems (chinese, tang300, song100: they carry terminal colour codes, and
examples/tang_poetry trains on them), split into fortunes at the `%` lines. Every 150th
fortune (about 16 KiB) is held out. Writes OUT/train.txt and OUT/val.txt, each cut to
its limit in bytes when one is given (the examples' --tiny runs), and prints the sizes.
"""
import os
import re
import sys

FORTUNES = "/usr/share/games/fortunes"
SKIP = {"art", "ascii-art", "chinese", "tang300", "song100"}


def main():
    if not 2 <= len(sys.argv) <= 4:
        sys.exit(__doc__.splitlines()[0])
    out = sys.argv[1]
    train_limit = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    held_limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    text = b""
    for name in sorted(os.listdir(FORTUNES)):
        path = os.path.join(FORTUNES, name)
        if name.endswith((".dat", ".u8")) or name in SKIP or not os.path.isfile(path):
            continue
        text += open(path, "rb").read()
    fortunes = re.split(rb"(?m)^%\n", text)
    train = [f for i, f in enumerate(fortunes) if i % 150 != 75]
    held = [f for i, f in enumerate(fortunes) if i % 150 == 75]
    train_text, held_text = b"%\n".join(train), b"%\n".join(held)
    if train_limit:
        train_text = train_text[:train_limit]
    if held_limit:
        held_text = held_text[:held_limit]
    open(os.path.join(out, "train.txt"), "wb").write(train_text)
    open(os.path.join(out, "val.txt"), "wb").write(held_text)
    print(f"{len(fortunes)} fortunes: {len(train)} to train on ({len(train_text)} bytes), "
          f"{len(held)} held out ({len(held_text)} bytes)")


if __name__ == "__main__":
    main()
