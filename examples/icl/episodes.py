#!/usr/bin/env python3
"""episodes.py — the synthetic few-shot task of the in-context-learning example.

Every episode draws a fresh mapping: a random permutation pi of 8 letters, x in
"abcdefgh" -> pi(x) in "ABCDEFGH". It then shows 9 pairs "x>Y" of it, joined by commas,
with each x drawn at random (repeats allowed):

    c>F,a>B,c>F,h>D,e>A,a>B,g>H,d>C,h>D

Training episodes are "bursty": each uses a random subset of 2 to 8 of the letters, so
x repeats often within it (with all 8 letters, a model learning from scratch sat at the
loss of a uniform guess, ln 8, for 4000 steps: see README.md). The recipe also makes
them longer, 32 pairs (--pairs 32): most of their answers then repeat a shown x, which
is what finally taught the model to look the query up (README.md, "What changes it").
Validation and test episodes draw x from all 8 letters and have 9 pairs.

The answer to pair k (k = 0..8) follows k demonstrations of the same mapping, so one
episode asks a 0-shot, a 1-shot, ... and an 8-shot question at once; a causal decoder
answering pair k sees exactly the k pairs before it (the pairs after it cannot influence
it). Nothing outside the episode says what pi is: the answer can only come from the
context. A query whose x appeared among the demonstrations can be copied; otherwise the
best possible guess picks among the capitals the demonstrations have not used.

Mappings are split once and for all by their rank in the lexicographic order of the
8! = 40320 permutations: rank % 10 == 0 (4032 mappings) are held out. Training episodes
use only the other 36288; validation and evaluation episodes only held-out ones, so
every measured answer is about a mapping the model never saw in training.

    episodes.py tsv   N SEED OUT.tsv        N bursty episodes of training mappings for
                                            `kiln train --task seq2seq` (text<TAB>.)
    episodes.py tsv   N SEED OUT.tsv --held-out     N episodes of held-out mappings, x
                                            drawn from all 8 letters (validation)
    episodes.py eval  N SEED OUT.safetensors OUT.txt
                                            N held-out episodes: their first 34 bytes as
                                            `tokens` (i32 [N, 34]) for `kiln run`, and the
                                            episodes one per line
    --pairs P                               P pairs per episode instead of 9

Standard library only; the same SEED gives the same files.
"""
import json
import random
import struct
import sys

X = "abcdefgh"
Y = "ABCDEFGH"
N_LETTERS = len(X)
PAIRS = 9  # 8 demonstrations, then the query
HELD_OUT_EVERY = 10


def perm_rank(perm):
    """Lexicographic rank of a permutation of 0..n-1 (its Lehmer code read as a number)."""
    n = len(perm)
    rank = 0
    for i in range(n):
        smaller = sum(1 for j in range(i + 1, n) if perm[j] < perm[i])
        rank = rank * (n - i) + smaller
    return rank


def is_held_out(perm):
    return perm_rank(perm) % HELD_OUT_EVERY == 0


def draw_mapping(rng, held_out):
    while True:
        perm = list(range(N_LETTERS))
        rng.shuffle(perm)
        if is_held_out(perm) == held_out:
            return perm


def episode(rng, held_out, pairs=PAIRS, bursty=False):
    perm = draw_mapping(rng, held_out)
    letters = list(range(N_LETTERS))
    if bursty:  # training: the pairs use a random subset of 2..8 letters, so x repeats often
        letters = rng.sample(letters, rng.randint(2, N_LETTERS))
    xs = [rng.choice(letters) for _ in range(pairs)]
    return ",".join(X[x] + ">" + Y[perm[x]] for x in xs)


def write_tsv(n, seed, path, held_out, pairs):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            # seq2seq needs a target field; the model reads only the source (see icl_train.json)
            f.write(episode(rng, held_out, pairs, bursty=not held_out) + "\t.\n")


def write_safetensors_i32(path, name, rows):
    """One i32 tensor [len(rows), len(rows[0])] in the safetensors format."""
    flat = [v for row in rows for v in row]
    data = struct.pack("<%di" % len(flat), *flat)
    header = {name: {"dtype": "I32", "shape": [len(rows), len(rows[0])], "data_offsets": [0, len(data)]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def write_eval(n, seed, st_path, txt_path, pairs):
    rng = random.Random(seed)
    episodes = [episode(rng, True, pairs) for _ in range(n)]
    # the model reads bytes 0..33; byte 34 (the last answer) is only predicted
    write_safetensors_i32(st_path, "tokens", [[ord(c) for c in e[:-1]] for e in episodes])
    with open(txt_path, "w") as f:
        f.write("\n".join(episodes) + "\n")


def main(argv):
    pairs = PAIRS
    if "--pairs" in argv:
        i = argv.index("--pairs")
        pairs = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    if len(argv) >= 5 and argv[1] == "tsv":
        write_tsv(int(argv[2]), int(argv[3]), argv[4], "--held-out" in argv[5:], pairs)
    elif len(argv) == 6 and argv[1] == "eval":
        write_eval(int(argv[2]), int(argv[3]), argv[4], argv[5], pairs)
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
