#!/usr/bin/env python3
"""prepare.py — the Tang poems of Debian's fortunes-zh as training text.

    prepare.py TANG300 OUT_DIR [LIMIT]

TANG300 is /usr/share/games/fortunes/tang300: 313 poems (Three Hundred Tang Poems),
each a title line 《…》 in green and an author line 作者：… in yellow (ANSI colour codes,
ESC [ 32 m … ESC [ m), then the poem, poems separated by a line "%". The colour codes are
stripped; every 20th poem (16) is held out. Writes OUT_DIR/train.txt and OUT_DIR/val.txt,
poems joined by "%" lines as in the source. LIMIT (characters) cuts both short for a quick
test. Standard library only.
"""
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    text = ANSI.sub("", open(argv[1], encoding="utf-8").read())
    if "\x1b" in text:
        raise SystemExit(f"{argv[1]}: an escape sequence is left after stripping the colour codes")
    poems = [p.strip("\n") for p in re.split(r"(?m)^%\n", text) if p.strip()]
    train = [p for i, p in enumerate(poems) if i % 20 != 10]
    val = [p for i, p in enumerate(poems) if i % 20 == 10]
    train_text = "\n%\n".join(train) + "\n%\n"
    val_text = "\n%\n".join(val) + "\n%\n"
    if len(argv) == 4:
        train_text, val_text = train_text[: int(argv[3])], val_text[: int(argv[3]) // 4]
    open(argv[2] + "/train.txt", "w", encoding="utf-8").write(train_text)
    open(argv[2] + "/val.txt", "w", encoding="utf-8").write(val_text)
    print(f"{len(poems)} poems: {len(train)} to train on ({len(train_text)} characters, "
          f"{len(set(train_text))} distinct), {len(val)} held out ({len(val_text)} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
