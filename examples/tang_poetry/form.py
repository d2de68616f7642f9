#!/usr/bin/env python3
"""form.py — how many lines of a poem keep the five- or seven-character form.

    form.py FILE...

Each FILE holds one text (the training poems, or one `kiln generate` output). A poem's
body lines are the lines after its title 《…》 and its author line 作者：…; poems are
separated by "%" lines. A body line keeps the form when it is a couplet of two
five-character or two seven-character clauses (Chinese characters only), the first ending
in "，" or "；", the second in "。", "？", "！" or "；" — as 92% of the body lines of the 313
training poems do. A text's last line is left out when it is unfinished (does not end a
sentence: the generation stopped inside it). Prints per file, then in total: lines, five-character
lines, seven-character lines, the share keeping the form; with --json one object.
Standard library only.
"""
import json
import re
import sys

HAN = r"[\u3400-\u9fff]"
FIVE = re.compile(rf"^{HAN}{{5}}[，；]{HAN}{{5}}[。？！；]$")
SEVEN = re.compile(rf"^{HAN}{{7}}[，；]{HAN}{{7}}[。？！；]$")
END = "。？！；"


def body_lines(text):
    lines = text.rstrip().split("\n")
    if lines[-1] != "%" and lines[-1][-1:] not in END:
        lines = lines[:-1]  # cut off by the end of the generation (or of the file)
    for line in lines:
        line = line.strip()
        if not line or line == "%" or line.startswith("《") or line.startswith("作者："):
            continue
        yield line


def count(text):
    n = five = seven = 0
    for line in body_lines(text):
        n += 1
        five += bool(FIVE.match(line))
        seven += bool(SEVEN.match(line))
    return n, five, seven


def main(argv):
    as_json = "--json" in argv
    files = [a for a in argv[1:] if a != "--json"]
    if not files:
        sys.stderr.write(__doc__)
        return 2
    total = [0, 0, 0]
    per_file = {}
    for path in files:
        n, five, seven = count(open(path, encoding="utf-8").read())
        per_file[path] = {"lines": n, "five": five, "seven": seven}
        total = [total[0] + n, total[1] + five, total[2] + seven]
        if not as_json:
            print(f"{path}: {n} lines, {five} five-character, {seven} seven-character")
    n, five, seven = total
    share = (five + seven) / n if n else 0.0
    if as_json:
        print(json.dumps({"lines": n, "five": five, "seven": seven, "share": share, "files": per_file}))
    else:
        print(f"total: {n} lines, {five} five-character, {seven} seven-character: {100 * share:.1f}% keep the form")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
