#!/usr/bin/env bash
# test_torch_parity.sh KILN SRCDIR — tests/cli/torch_parity.py: cases at the points the
# conformance cases keep away from (an identity cast's gradient, maximum/minimum ties, an
# all-zero row in infonce), against PyTorch in float64. Skipped without PyTorch.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "test_torch_parity: PyTorch is not installed (apt-get install python3-torch): skipped"
    exit 77
fi
"$py" "$src/tests/cli/torch_parity.py" "$kiln" || fail "kiln and PyTorch disagree (above)"
finish
