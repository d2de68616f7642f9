#!/usr/bin/env bash
# test_out_atomic.sh KILN SRCDIR — output files are replaced atomically: a failing run or
# init leaves an existing --out / -o untouched, a succeeding one replaces it with a complete
# file, no temporary file is left beside it, and a run killed at any moment leaves either
# the old file or the complete new one. An output that is the same file as another output
# or an input of the command (the same path, another spelling of it, a link) is refused
# (exit 2) before anything is written.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts
mkdir d # the directory the outputs live in; nothing else may appear there

listing() { ls -A d | sort; }
kiln_status() { # kiln_status ARGS... — runs kiln, prints its exit status
    local status=0
    "$kiln" "$@" >out.txt 2>err.txt || status=$?
    echo "$status"
}
printf 'a good file that no failure may overwrite\n' >good.ref
reset_out() { cp good.ref "$1"; }
is_untouched() { cmp -s good.ref "$1"; }

model=$src/tests/hostile/base/model.json # embedding (16, 8) → linear 5 → softmax
status=$(kiln_status init "$model" -o d/w.safetensors --seed 3)
[[ $status -eq 0 ]] || fail "init: exit $status — $(head -n 3 err.txt)"
"$py" -c '
import numpy as np, safetensors_np as st
st.write("d/x.safetensors", {"tokens": np.array([[1, 2, 3, 4], [5, 6, 7, 15]], dtype="<i4")})
st.write("d/bad.safetensors", {"tokens": np.array([[1, 2, 3, 4], [5, 6, 99, 15]], dtype="<i4")})'
run_args=(run "$model" --weights d/w.safetensors --interp)

# ---- a failing run leaves the existing output alone ---------------------------------------
reset_out d/y.safetensors
before=$(listing)
status=$(kiln_status "${run_args[@]}" --inputs d/bad.safetensors --out d/y.safetensors)
[[ $status -eq 1 ]] || fail "run with token 99 (vocab 16): exit $status, expected 1"
is_untouched d/y.safetensors || fail "a failing run (bad token) changed the existing --out"
[[ "$(listing)" == "$before" ]] || fail "a failing run left files behind: $(comm -13 <(echo "$before") <(listing) | tr '\n' ' ')"

# failing before anything runs (weights missing a parameter) — also untouched
"$py" -c '
import safetensors_np as st
w = st.read("d/w.safetensors"); del w["proj.bias"]; st.write("d/w_missing.safetensors", w)'
before=$(listing)
status=$(kiln_status run "$model" --weights d/w_missing.safetensors --inputs d/x.safetensors --out d/y.safetensors --interp)
[[ $status -eq 1 ]] || fail "run with a weights file missing proj.bias: exit $status, expected 1"
is_untouched d/y.safetensors || fail "a failing run (missing parameter) changed the existing --out"
[[ "$(listing)" == "$before" ]] || fail "a failing run left files behind"

# ---- a succeeding run replaces it, completely, leaving nothing else -------------------------
before=$(listing)
status=$(kiln_status "${run_args[@]}" --inputs d/x.safetensors --out d/y.safetensors)
[[ $status -eq 0 ]] || fail "run: exit $status — $(head -n 3 err.txt)"
is_untouched d/y.safetensors && fail "a succeeding run did not replace the existing --out"
[[ "$(listing)" == "$before" ]] || fail "a succeeding run left files behind: $(comm -13 <(echo "$before") <(listing) | tr '\n' ' ')"
"$py" -c '
import numpy as np, safetensors_np as st
y = st.read("d/y.safetensors")
assert set(y) == {"probs"}, sorted(y)
p = y["probs"]
assert p.shape == (2, 4, 5) and p.dtype == np.float32, (p.shape, p.dtype)
assert np.allclose(p.sum(-1), 1, atol=1e-5), p.sum(-1)' || fail "the replaced --out is not the expected probs (2, 4, 5)"
cp d/y.safetensors first.safetensors
# and a second success over a kiln-written file gives the same bytes
status=$(kiln_status "${run_args[@]}" --inputs d/x.safetensors --out d/y.safetensors)
[[ $status -eq 0 ]] || fail "second run: exit $status"
cmp -s d/y.safetensors first.safetensors || fail "running again over the output gave other bytes"

# ---- compiled execution (no --interp): the same rules --------------------------------------
reset_out d/yc.safetensors
before=$(listing)
status=$(kiln_status run "$model" --weights d/w.safetensors --inputs d/bad.safetensors --out d/yc.safetensors)
[[ $status -eq 1 ]] || fail "compiled run with token 99 (vocab 16): exit $status, expected 1"
is_untouched d/yc.safetensors || fail "a failing compiled run changed the existing --out"
[[ "$(listing)" == "$before" ]] || fail "a failing compiled run left files behind"
status=$(kiln_status run "$model" --weights d/w.safetensors --inputs d/x.safetensors --out d/yc.safetensors)
if [[ $status -eq 0 ]]; then
    [[ "$(listing)" == "$before" ]] || fail "a succeeding compiled run left files behind"
    "$py" -c '
import numpy as np, safetensors_np as st
c, i = st.read("d/yc.safetensors"), st.read("first.safetensors")
assert set(c) == set(i) and np.allclose(c["probs"], i["probs"], rtol=1e-5, atol=1e-6)' ||
        fail "the compiled run's --out does not match the interpreter's"
elif [[ $status -ne 1 ]] || ! grep -q 'not implemented' err.txt; then
    fail "compiled run: exit $status — $(head -n 3 err.txt)"
else
    is_untouched d/yc.safetensors || fail "a refused compiled run changed the existing --out"
fi
rm -f d/yc.safetensors

# ---- init: the same rules for -o ----------------------------------------------------------------
reset_out d/w2.safetensors
printf '{"format": "kiln/1", "name": "m", "layers": [{"op": "relu"' >broken.json
before=$(listing)
status=$(kiln_status init broken.json -o d/w2.safetensors)
[[ $status -eq 1 ]] || fail "init of a broken model: exit $status, expected 1"
is_untouched d/w2.safetensors || fail "a failing init changed the existing -o file"
[[ "$(listing)" == "$before" ]] || fail "a failing init left files behind"
status=$(kiln_status init "$model" -o d/w2.safetensors --seed 3)
[[ $status -eq 0 ]] || fail "init over an existing file: exit $status"
cmp -s d/w2.safetensors d/w.safetensors || fail "init over an existing file did not write the same weights as a fresh init"
[[ "$(listing)" == "$before" ]] || fail "a succeeding init left files behind"

# ---- --out into a missing directory: refused, naming the path; nothing created -------------
status=$(kiln_status "${run_args[@]}" --inputs d/x.safetensors --out d/missing/y.safetensors)
[[ $status -eq 1 ]] || fail "--out in a missing directory: exit $status, expected 1"
grep -q 'd/missing/y.safetensors' err.txt || fail "--out in a missing directory: the message does not name the path: $(head -n 3 err.txt)"

# ---- killed at any moment: the old file or the whole new one, never a torn one -------------
# char_gpt at T=64 runs long enough for kills to land during compute and (rarely) the write
gpt=$src/examples/char_gpt.json
status=$(kiln_status init "$gpt" -o gw.safetensors --seed 1)
[[ $status -eq 0 ]] || fail "init char_gpt: exit $status"
"$py" -c '
import numpy as np, safetensors_np as st
st.write("gx.safetensors", {"tokens": (np.arange(64, dtype="<i4") * 7 % 256).reshape(1, 64)})'
"$kiln" run "$gpt" --weights gw.safetensors --inputs gx.safetensors --out gy_ref.safetensors --interp 2>err.txt ||
    fail "char_gpt run: $(head -n 3 err.txt)"
# ---- an output that is another output or an input: refused, nothing written -----------------
mkdir a
cp "$model" a/m.json
printf 'some text to train on\n' >a/t.txt
cp good.ref a/keep
ln a/keep a/hard
ln -s keep a/sym
cp a/m.json m.ref
cp a/t.txt t.ref
aliased() { # aliased DESC FLAG ARGS... — kiln ARGS exits 2 naming FLAG and "same file", writes nothing
    local what=$1 flag=$2
    shift 2
    local before
    before=$(ls -A a | sort)
    kiln_fails "$what" 2 "$flag: error: is the same file as" "$@"
    [[ "$(ls -A a | sort)" == "$before" ]] || fail "$what: the directory changed: $(ls -A a | tr '\n' ' ')"
    cmp -s a/m.json m.ref && cmp -s a/t.txt t.ref && is_untouched a/keep || fail "$what: an input was changed"
}
aliased "init -o MODEL" -o init a/m.json -o a/m.json
aliased "init -o ./MODEL" -o init a/m.json -o ./a/../a/m.json
aliased "compile -o X --header X" --header compile a/m.json -o a/x.so --header ./a/x.so
aliased "compile --emit -o MODEL" -o compile a/m.json --emit ir -o a/m.json
aliased "train --log MODEL" --log train a/m.json --data a/t.txt --steps 1 --log a/m.json
aliased "train --save DATA" --save train a/m.json --data a/t.txt --steps 1 --save a/t.txt
aliased "train --save X --log X" --log train a/m.json --data a/t.txt --steps 1 --save a/c.st --log a/c.st
aliased "run --out INPUTS (symlink)" --out run a/m.json --weights d/w.safetensors --inputs a/keep --out a/sym
aliased "embed --out INPUT" --out embed a/m.json --weights d/w.safetensors --input a/t.txt --out a/t.txt
aliased "plot -o METRICS" -o plot a/t.txt a/keep -o a/hard
# the usual chunked training is not an alias: --resume X --save X (test_train.sh runs it);
# nor is fine-tuning in place, --init X --save X (the save is atomic)
cat >a/lm.json <<'EOF'
{"format": "kiln/1", "name": "lm", "dims": {"B": 2, "T": 8},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}, "targets": {"shape": ["B", "T"], "dtype": "i32"}},
 "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 8},
            {"name": "logits", "op": "linear", "out": 256}],
 "outputs": ["logits"], "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}]}
EOF
kiln_ok "train --save a/ft.st" train a/lm.json --data a/t.txt --steps 1 --save a/ft.st
cp a/ft.st ft.ref
kiln_ok "train --init X --save X" train a/lm.json --data a/t.txt --steps 1 --init a/ft.st --save a/ft.st
cmp -s a/ft.st ft.ref && fail "train --init X --save X did not write the fine-tuned weights"

mkdir k
for delay in 0.05 0.1 0.2 0.3 0.5 0.8 1.2; do
    reset_out k/gy.safetensors
    "$kiln" run "$gpt" --weights gw.safetensors --inputs gx.safetensors --out k/gy.safetensors --interp 2>/dev/null &
    pid=$!
    sleep "$delay"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if ! is_untouched k/gy.safetensors && ! cmp -s k/gy.safetensors gy_ref.safetensors; then
        fail "killed after ${delay}s: --out is neither the old file nor the complete new one"
    fi
done

finish
