#!/usr/bin/env bash
# test_eval_partial.sh KILN SRCDIR — tests/cli/eval_partial.py: `kiln eval` and
# `kiln train --val` over a pass whose last batch is partial give the loss of the real
# examples only, for every loss (infonce, bce_logits, mse, cross_entropy), against PyTorch
# in float64. Skipped without PyTorch.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "test_eval_partial: PyTorch is not installed (apt-get install python3-torch): skipped"
    exit 77
fi
"$py" "$src/tests/cli/eval_partial.py" "$kiln" || fail "kiln and PyTorch disagree (above)"
finish
