#!/usr/bin/env bash
# test_plot.sh KILN SRCDIR — `kiln plot` draws kiln train --log files as SVG:
#   - two logs give one well-formed SVG (python's XML parser reads it) with a loss and
#     a val_loss series per run, a legend naming both runs, a title, and tick labels
#     that are numbers; the y ticks are nice values (1, 2 or 5 × 10^k apart);
#   - --y picks other series (comma list and repeated), --log-scale and --smooth work;
#   - a resumed log that repeats steps draws the continued run once (no backtracking);
#   - values near the float limit (±1e308, a log range of 600 decades) give finite
#     coordinates inside the canvas, never nan or inf;
#   - a title with XML specials is escaped; a failed plot leaves the old output as it was;
#   - bad input fails with a clear message and a non-zero exit: a missing file, an
#     empty file, a file that is not JSON lines, no numeric series, an unknown --y name,
#     no -o, no file, --log-scale with nothing positive;
#   - a real log written by kiln train plots.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

# two logs as kiln train writes them: loss every step, val_loss every 10th
"$py" - <<'PY'
import json, math
for name, scale in (("run_a", 1.0), ("run_b", 1.3)):
    with open(name + ".jsonl", "w") as f:
        for s in range(1, 101):
            row = {"step": s, "loss": 5.5 * scale * math.exp(-s / 30) + 1.5, "lr": 3e-4 * min(1, s / 10),
                   "tokens_per_s": 1000.0 + s, "elapsed_s": s * 0.1}
            if s % 10 == 0:
                row["val_loss"] = row["loss"] + 0.2
            f.write(json.dumps(row) + "\n")
PY

check_svg() { # check_svg FILE PYTHON-ASSERTIONS — parses FILE, then runs the assertions
    "$py" - "$1" "$2" <<'PY'
import math, sys
import xml.etree.ElementTree as ET
S = "{http://www.w3.org/2000/svg}"
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == S + "svg", root.tag
groups = list(root.iter(S + "g"))
series = [(g.get("data-run"), g.get("data-series")) for g in groups if g.get("class") == "series"]
legend = [g for g in groups if g.get("class") == "legend"]
legend_text = [t.text for g in legend for t in g.iter(S + "text")]
texts = list(root.iter(S + "text"))
ticks = [t for t in texts if t.get("class") == "tick"]
title = [t.text for t in texts if t.get("class") == "title"]
polylines = {(g.get("data-run"), g.get("data-series")):
             [[tuple(map(float, p.split(","))) for p in pl.get("points").split()] for pl in g.iter(S + "polyline")]
             for g in groups if g.get("class") == "series"}
exec(sys.argv[2])
PY
}

# ---- two runs, the default series ----------------------------------------------------------
status=0
"$kiln" plot run_a.jsonl run_b.jsonl -o two.svg >out.txt 2>err.txt || status=$?
if [[ $status -ne 0 ]]; then
    fail "plot of two runs: exit $status — $(cat err.txt)"
else
    grep -q "wrote two.svg: 2 runs" out.txt || fail "no summary line: $(cat out.txt)"
    check_svg two.svg '
assert sorted(series) == [("run_a", "loss"), ("run_a", "val_loss"), ("run_b", "loss"), ("run_b", "val_loss")], series
assert len(legend) == 1 and legend_text == ["run_a loss", "run_a val_loss", "run_b loss", "run_b val_loss"], legend_text
assert title and title[0], title
values = [float(t.text) for t in ticks]            # every tick label is a plain number
ys = sorted(float(t.text) for t in ticks if t.get("text-anchor") == "end")
assert len(ys) >= 4, ys
step = ys[1] - ys[0]
mant = step / 10 ** math.floor(math.log10(step))
assert any(abs(mant - m) < 1e-6 for m in (1, 2, 5)), ("y tick step is not nice", ys)
assert all(abs((b - a) - step) < 1e-9 for a, b in zip(ys, ys[1:])), ys
xs = sorted(float(t.text) for t in ticks if t.get("text-anchor") == "middle")
assert xs[0] == 0 and xs[-1] == 100, xs
for key, lines in polylines.items():     # inside the canvas, moving right
    for pts in lines:
        assert all(0 <= x <= 900 and 0 <= y <= 540 for x, y in pts), key
        assert all(b[0] >= a[0] for a, b in zip(pts, pts[1:])), key
assert len(polylines[("run_a", "val_loss")][0]) == 10
' || fail "two runs: the SVG (above)"
fi

# ---- --y (comma list and repeated), --log-scale, --smooth, --title --------------------------
"$kiln" plot run_a.jsonl -o lr.svg --y lr,tokens_per_s --y lr --title 'a <b> & "c"' >/dev/null 2>err.txt ||
    fail "--y: $(cat err.txt)"
check_svg lr.svg '
assert sorted(series) == [("run_a", "lr"), ("run_a", "tokens_per_s")], series
assert title == ["a <b> & \"c\""], title
' || fail "--y / --title: the SVG (above)"
"$kiln" plot run_a.jsonl run_b.jsonl -o log.svg --log-scale --smooth 9 >/dev/null 2>err.txt ||
    fail "--log-scale --smooth: $(cat err.txt)"
check_svg log.svg '
assert len(polylines[("run_a", "loss")]) == 2, "smoothing draws the raw series and its mean"
assert len(polylines[("run_a", "val_loss")]) == 1, "10 validations are too few to smooth"
assert any("log scale" in (t.text or "") for t in texts)
' || fail "--log-scale --smooth: the SVG (above)"

# ---- a resumed log repeats steps 41-50: the curve does not go back -------------------------
{ head -n 50 run_a.jsonl; sed -n 41,100p run_a.jsonl; } >resumed.jsonl
"$kiln" plot resumed.jsonl -o resumed.svg >/dev/null 2>err.txt || fail "resumed log: $(cat err.txt)"
check_svg resumed.svg '
pts = polylines[("resumed", "loss")][0]
assert len(pts) == 100 and all(b[0] > a[0] for a, b in zip(pts, pts[1:])), len(pts)
' || fail "resumed log: the SVG (above)"

# ---- values at the float limit: drawn inside the canvas, never a nan or inf coordinate -------
printf '{"step": 1, "loss": 1e308}\n{"step": 2, "loss": -1e308}\n{"step": 3, "loss": 5}\n' >huge.jsonl
printf '{"step": 1, "loss": 5}\n{"step": 2, "loss": 1e300}\n{"step": 3, "loss": 1e-300}\n' >wide.jsonl
for args in "huge.jsonl -o huge.svg" "wide.jsonl -o wide.svg --log-scale" "huge.jsonl -o hs.svg --smooth 1"; do
    out=${args#* -o }
    out=${out%% *}
    "$kiln" plot $args >/dev/null 2>err.txt || fail "plot $args: $(cat err.txt)"
    ! grep -Eiq '[^a-z](nan|inf)[^a-z]' "$out" || fail "plot $args: $(grep -Eio '.{30}[^a-z](nan|inf)[^a-z].{0,10}' "$out" | head -n 2)"
    check_svg "$out" '
for key, lines in polylines.items():
    for pts in lines:
        assert pts and all(0 <= x <= 900 and 0 <= y <= 540 for x, y in pts), (key, pts)
' || fail "plot $args: the SVG (above)"
done

# ---- bad input: a clear message, non-zero exit, the old output untouched --------------------
cp two.svg keep.svg
expect_fail() { # expect_fail MESSAGE-REGEX ARGS... — kiln plot must fail with that message
    local want=$1
    shift
    local status=0
    "$kiln" plot "$@" >out.txt 2>err.txt || status=$?
    if [[ $status -eq 0 ]]; then
        fail "plot $*: exit 0"
    elif ! grep -Eq -- "$want" err.txt; then
        fail "plot $*: the message does not match '$want': $(cat err.txt)"
    fi
}
: >empty.jsonl
printf 'not json\n' >garbage.jsonl
printf '{"step": 1, "note": "x"}\n{"step": 2, "note": "y"}\n' >nonum.jsonl
printf '{"step": 1, "loss": -1}\n' >negative.jsonl
expect_fail "missing.jsonl: error: cannot open: No such file" missing.jsonl -o keep.svg
expect_fail "empty.jsonl: error: is empty: no metrics to plot" empty.jsonl -o keep.svg
expect_fail "garbage.jsonl:1:1: error: not a JSON object" garbage.jsonl -o keep.svg
expect_fail "no numeric loss or val_loss to plot" nonum.jsonl -o keep.svg
expect_fail "no numeric values named 'nope' in run_a.jsonl \(numeric values there: loss, lr" run_a.jsonl \
    -o keep.svg --y nope
expect_fail "no value above 0" negative.jsonl -o keep.svg --log-scale
expect_fail "-o CURVE.svg is required" run_a.jsonl
expect_fail "expects one or more METRICS.jsonl" -o keep.svg
cmp -s two.svg keep.svg || fail "a failed plot changed the existing output"
if ls | grep -q '\.tmp\.'; then fail "a temporary file was left behind: $(ls)"; fi

# ---- a log written by kiln train --------------------------------------------------------------
cat >tiny.json <<'JSON'
{
  "format": "kiln/1", "name": "tiny",
  "dims": {"B": 4, "T": 16},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"},
             "targets": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 16},
    {"name": "ln_f", "op": "layernorm"},
    {"name": "logits", "op": "linear", "out": 256}
  ],
  "outputs": ["logits"],
  "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
  "train": {"optimizer": "adamw", "lr": 1e-2, "steps": 12}
}
JSON
"$py" -c "open('text.txt', 'w').write('the quick brown fox jumps over the lazy dog ' * 60)"
if "$kiln" train tiny.json --data text.txt --val text.txt --val-batches 1 --log train.jsonl >out.txt 2>err.txt; then
    "$kiln" plot train.jsonl -o train.svg >/dev/null 2>err.txt || fail "plotting kiln train's log: $(cat err.txt)"
    check_svg train.svg 'assert sorted(series) == [("train", "loss"), ("train", "val_loss")], series' ||
        fail "kiln train's log: the SVG (above)"
else
    fail "kiln train for a log: $(cat err.txt)"
fi

finish "kiln plot: all checks passed"
