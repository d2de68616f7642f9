#!/usr/bin/env python3
"""score.py — answer accuracy by number of shots, from the logits `kiln run` wrote.

    score.py EPISODES.txt LOGITS.safetensors RESULT.json [--label NAME]

EPISODES.txt holds the evaluation episodes (episodes.py eval), one per line, and
LOGITS.safetensors the model's `logits` over their first 34 bytes (f32 [N, 34, V]).
The answer to pair k sits at byte 4k+2; the model's answer is the argmax of the logits
at byte 4k+1 (the '>'), over the whole vocabulary. For each k = 0..8 this prints and
writes to RESULT.json:

- acc      the model's accuracy;
- loss     its mean answer loss, -ln p(right answer) under the softmax over the whole
           vocabulary (it moves before the argmax does: ln 8 = 2.079 is a uniform guess);
- seen     its accuracy on queries whose x is among the k demonstrations (copying works),
- unseen   and on the others (only elimination helps: pi(x) is none of the capitals shown);
- ideal    the accuracy of the best possible answerer on the same episodes (exact on a
           seen x, else a uniform guess among the capitals not yet shown: 1/(8 - used));
- chance   1/8, a guess that knows only the answer is one of 8 capitals;
- p_seen   the share of queries whose x was shown.

Standard library only.
"""
import array
import json
import math
import struct
import sys

PAIRS = 9
N_LETTERS = 8


def read_safetensors(path, name):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        info = header[name]
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name}: expected F32, got {info['dtype']}")
        begin, end = info["data_offsets"]
        f.seek(8 + n + begin)
        values = array.array("f")
        values.frombytes(f.read(end - begin))
    if sys.byteorder != "little":
        values.byteswap()
    return info["shape"], values


def score(episodes, shape, logits):
    n, t, v = shape
    if n != len(episodes):
        raise SystemExit(f"{n} rows of logits for {len(episodes)} episodes")
    rows = []
    for k in range(PAIRS):
        hits = seen_hits = seen_n = 0
        ideal = nll = 0.0
        for i, e in enumerate(episodes):
            pairs = e.split(",")
            x, answer = pairs[k][0], pairs[k][2]
            shown = pairs[:k]
            base = (i * t + 4 * k + 1) * v
            row = logits[base:base + v]
            guess = max(range(v), key=row.__getitem__)
            hit = guess == ord(answer)
            top = row[guess]
            nll += top + math.log(sum(math.exp(z - top) for z in row)) - row[ord(answer)]
            hits += hit
            if any(p[0] == x for p in shown):
                seen_n += 1
                seen_hits += hit
                ideal += 1.0
            else:
                ideal += 1.0 / (N_LETTERS - len({p[2] for p in shown}))
        unseen_n = n - seen_n
        rows.append({
            "k": k,
            "acc": hits / n,
            "loss": nll / n,
            "seen": seen_hits / seen_n if seen_n else None,
            "unseen": (hits - seen_hits) / unseen_n if unseen_n else None,
            "ideal": ideal / n,
            "chance": 1.0 / N_LETTERS,
            "p_seen": seen_n / n,
            "episodes": n,
        })
    return rows


def fmt(x):
    return "–" if x is None else f"{x:.3f}"


def main(argv):
    if len(argv) not in (4, 6) or (len(argv) == 6 and argv[4] != "--label"):
        sys.stderr.write(__doc__)
        return 2
    episodes = [line.strip() for line in open(argv[1]) if line.strip()]
    shape, logits = read_safetensors(argv[2], "logits")
    rows = score(episodes, shape, logits)
    label = argv[5] if len(argv) == 6 else "model"
    with open(argv[3], "w") as f:
        json.dump({"label": label, "rows": rows}, f, indent=1)
    print(f"{label}: answer accuracy on {len(episodes)} episodes of held-out mappings")
    print("| shots k | accuracy | seen x | unseen x | best possible | chance | x seen | answer loss |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['k']} | {fmt(r['acc'])} | {fmt(r['seen'])} | {fmt(r['unseen'])} | {fmt(r['ideal'])} "
              f"| {fmt(r['chance'])} | {fmt(r['p_seen'])} | {fmt(r['loss'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
