#!/usr/bin/env bash
# test_dot_render.sh KILN SRCDIR — the char_gpt training step's `--emit dot` picture
# renders with Graphviz (`dot -Tsvg`) in under 30 s of CPU time (drawing every node
# instead took more than 11 minutes). Skipped (exit 77, ctest's SKIP_RETURN_CODE) when
# `dot` is not installed.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
if ! command -v dot >/dev/null; then
    echo "SKIP: Graphviz 'dot' is not installed"
    exit 77
fi
"$kiln" compile "$src/examples/char_gpt.json" --train --emit dot -o train.dot
boxes=$(grep -cE '^  k[0-9]+ \[' train.dot)
TIMEFORMAT='%R %U %S'
status=0
{ time timeout 300 dot -Tsvg train.dot -o train.svg 2>dot.err; } 2>time.txt || status=$?
if [[ $status -ne 0 ]]; then
    echo "FAIL: dot -Tsvg exited $status (124: still running after 300 s): $(head -n 3 dot.err)"
    exit 1
fi
read -r real user sys <time.txt
grep -q '</svg>' train.svg || { echo "FAIL: no SVG written"; exit 1; }
cpu=$(/usr/bin/python3 -c "print(f'{$user + $sys:.1f}')")
echo "char_gpt training step: $boxes kernels; dot -Tsvg took ${real} s wall, ${cpu} s CPU"
if /usr/bin/python3 -c "import sys; sys.exit(0 if $user + $sys < 30 else 1)"; then
    echo "test_dot_render: ok"
else
    echo "FAIL: rendering took ${cpu} s of CPU time, the limit is 30 s"
    exit 1
fi
