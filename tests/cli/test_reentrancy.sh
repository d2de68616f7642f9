#!/usr/bin/env bash
# test_reentrancy.sh KILN SRCDIR — an exported library called from several threads at
# once, each with its own workspace, gives the bits of sequential calls
# (tests/cli/reentrant_forward.c; docs/reliability.md, "Determinism"):
#   - under ThreadSanitizer: the program is built with -fsanitize=thread and the library
#     is linked with a runtime archive (runtime/params.c, threads.c) built the same way
#     (KILN_EXPORT_RUNTIME), so TSan sees the pool's atomics and locks; a data race
#     fails the run (TSan's exit status 66). The generated kernels are not instrumented:
#     TSan sees their memset/memcpy calls only; the bit-for-bit comparison covers the rest.
#   - as shipped: the same program, plain, against the library `kiln compile` makes.
#   - an exported .so can be dlclose()d after its pool started, and a forked child uses
#     and resizes the pool (tests/cli/unload_fork.c);
#   - an exported .so needs no glibc newer than 2.34 (objdump -T).
# Callers × library threads: 4 × 2 (more callers than the pool: most run inline while
# one has the pool), 3 × 3 and 2 × 1.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
cc=${CC:-cc}


cat >reent.json <<'JSON'
{
  "format": "kiln/1", "name": "reent",
  "dims": {"B": 2, "T": 32},
  "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}},
  "layers": [
    {"name": "wte", "op": "embedding", "in": "tokens", "vocab": 256, "dim": 64},
    {"name": "wpe", "op": "pos_encoding", "kind": "learned", "max_len": 32},
    {"name": "blocks", "op": "encoder_layer", "repeat": 2, "heads": 4, "hidden": 256, "norm": "pre",
     "causal": true, "activation": "gelu_tanh"},
    {"name": "ln_f", "op": "layernorm"},
    {"name": "logits", "op": "linear", "out": 256, "bias": false, "tie": "wte.weight"}
  ],
  "outputs": ["logits"],
  "init": {"seed": 3}
}
JSON
"$kiln" init reent.json -o w.safetensors >/dev/null
"$kiln" compile reent.json -o libreent.a --header reent.h >/dev/null

# ---- as shipped ------------------------------------------------------------------------------------
cflags=(-std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -I.)
"$cc" "${cflags[@]}" -O2 "$src/tests/cli/reentrant_forward.c" libreent.a -lm -lpthread -o plain
for args in "4 20 2" "3 20 3" "2 10 1"; do
    ./plain w.safetensors $args >out.txt 2>&1 || fail "plain, callers/rounds/threads $args: $(head -n 5 out.txt)"
done

# ---- under ThreadSanitizer ---------------------------------------------------------------------------
cat >tsan_probe.c <<'C'
int main(void) { return 0; }
C
if ! "$cc" -fsanitize=thread tsan_probe.c -o tsan_probe 2>/dev/null || ! ./tsan_probe 2>/dev/null; then
    echo "ThreadSanitizer is not available with $cc: only the plain runs were made"
else
    for f in params threads; do
        "$cc" -std=c17 -D_GNU_SOURCE -O1 -g -fPIC -fsanitize=thread -I"$src/include" -I"$src/runtime" \
            -c "$src/runtime/$f.c" -o "rt_$f.o"
    done
    ar rcs librt_tsan.a rt_params.o rt_threads.o
    KILN_EXPORT_RUNTIME=$work/librt_tsan.a "$kiln" compile reent.json -o libreent_tsan.a --header reent.h >/dev/null
    "$cc" "${cflags[@]}" -O1 -g -fsanitize=thread "$src/tests/cli/reentrant_forward.c" libreent_tsan.a -lm -lpthread \
        -o tsan
    for args in "4 5 2" "3 4 3" "2 3 1"; do
        TSAN_OPTIONS=halt_on_error=1 ./tsan w.safetensors $args >out.txt 2>&1 ||
            fail "TSan, callers/rounds/threads $args: $(grep -m 8 -e caller -e WARNING -e SUMMARY -e '#[0-3] ' out.txt)"
    done
fi

# ---- dlopen/dlclose and fork around the pool (tests/cli/unload_fork.c) -------------------------------
if "$kiln" compile reent.json -o libreent.so >/dev/null 2>err.txt &&
    "$cc" "${cflags[@]}" -O1 "$src/tests/cli/unload_fork.c" -ldl -o unload_fork 2>err.txt; then
    status=0
    timeout 120 ./unload_fork ./libreent.so w.safetensors >out.txt 2>&1 || status=$?
    [[ $status -eq 0 ]] || fail "unload_fork: exit $status (124: it hung; 139: it crashed) — $(head -n 5 out.txt)"
else
    fail "build unload_fork: $(head -n 3 err.txt)"
fi

# ---- the glibc an exported .so needs (docs/reliability.md): nothing newer than 2.34 -------------------
if "$kiln" compile reent.json -o libreent.so >/dev/null 2>err.txt; then
    newest=$(objdump -T libreent.so | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
    echo "libreent.so needs glibc $newest"
    [[ -n $newest && $(printf '%s\n2.34\n' "$newest" | sort -V | tail -n 1) == 2.34 ]] ||
        fail "libreent.so needs glibc $newest (docs/reliability.md says 2.34): $(objdump -T libreent.so | grep GLIBC_ | sort -k 5 -V | tail -n 3)"
else
    fail "compile libreent.so: $(head -n 3 err.txt)"
fi

finish "ok"
