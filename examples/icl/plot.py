#!/usr/bin/env python3
"""plot.py — answer accuracy against the number of shots, as a self-contained SVG.

    plot.py OUT.svg RESULT.json... [--title TEXT]

Each RESULT.json (score.py) is one line, named by its label; the first file's "best
possible" accuracy is drawn dashed and chance dotted. Standard library only.
"""
import json
import sys
from xml.sax.saxutils import escape

W, H = 760, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 250, 40, 50
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def main(argv):
    title = "answer accuracy on held-out mappings"
    if "--title" in argv:
        i = argv.index("--title")
        title = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    results = [json.load(open(p)) for p in argv[2:]]
    ks = [r["k"] for r in results[0]["rows"]]
    kmax = max(ks)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(k):
        return LEFT + pw * k / kmax

    def y(v):
        return TOP + ph * (1 - v)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for i in range(6):  # y grid and ticks: 0, 0.2, ... 1
        v = i / 5
        out.append(f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + pw}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for k in ks:
        out.append(f'<line x1="{x(k):.1f}" y1="{TOP + ph}" x2="{x(k):.1f}" y2="{TOP + ph + 5}" stroke="black"/>')
        out.append(f'<text x="{x(k):.1f}" y="{TOP + ph + 18}" text-anchor="middle">{k}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 10}" text-anchor="middle">shots k (demonstrations before the query)</text>')
    out.append(f'<text x="16" y="{TOP + ph / 2}" text-anchor="middle" transform="rotate(-90 16 {TOP + ph / 2})">'
               'accuracy</text>')

    series = [(r["label"], [row["acc"] for row in r["rows"]], COLOURS[i % len(COLOURS)], "")
              for i, r in enumerate(results)]
    series.append(("best possible", [row["ideal"] for row in results[0]["rows"]], "#555", "6 4"))
    series.append(("chance (1/8)", [row["chance"] for row in results[0]["rows"]], "#999", "2 3"))
    for n, (label, values, colour, dash) in enumerate(series):
        points = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in zip(ks, values))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        if not dash:
            out += [f'<circle cx="{x(k):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>' for k, v in zip(ks, values)]
        ly = TOP + 10 + 20 * n
        out.append(f'<line x1="{LEFT + pw + 12}" y1="{ly}" x2="{LEFT + pw + 36}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{LEFT + pw + 42}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    with open(argv[1], "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
