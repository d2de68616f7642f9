#!/usr/bin/env bash
# test_export_abi.sh KILN SRCDIR — what the exported library's entry points promise a C
# program that calls them wrongly (SPEC section 6: a bad input returns a non-zero code;
# docs/cli.md): tests/cli/generate/gen_rope.json compiled with --train --generate, and
# tests/cli/export_guards.c calls every entry point with a NULL pointer or a blob or
# workspace off its 64-byte alignment, each of which must return its documented code
# (and write nothing) instead of crashing; and tests/cli/load_small_stack.c runs NAME_load
# on a thread with a 16 KiB stack, which it must fit in with room to spare.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
cc=${CC:-cc}
model=$src/tests/cli/generate/gen_rope.json

kiln_ok "init" init "$model" -o w.safetensors || finish
kiln_ok "compile --train --generate" compile "$model" --train --generate -o libgen_rope.so --header gen_rope.h || finish
cflags=(-std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -O1 -I.)

# ---- NULL and misaligned pointers: a status, not a crash ------------------------------------------
if run "build export_guards" "$cc" "${cflags[@]}" "$src/tests/cli/export_guards.c" -L. -lgen_rope \
    -Wl,-rpath,"$work" -o export_guards; then
    status=0
    ./export_guards w.safetensors >out.txt 2>&1 || status=$?
    [[ $status -eq 0 ]] || fail "export_guards: exit $status (139: it crashed) — $(head -n 8 out.txt | tr '\n' '|')"
fi

# ---- NAME_load on a small stack --------------------------------------------------------------------
# at most 4 KiB beyond an empty thread's share (the loader needs about 2.6 KiB; it needed
# 10.5 KiB, and crashed on a 16 KiB stack); LD_BIND_NOW: see load_small_stack.c
if run "build load_small_stack" "$cc" "${cflags[@]}" "$src/tests/cli/load_small_stack.c" -L. -lgen_rope \
    -Wl,-rpath,"$work" -lpthread -o load_small_stack; then
    status=0
    LD_BIND_NOW=1 ./load_small_stack w.safetensors 4096 >out.txt 2>&1 || status=$?
    [[ $status -eq 0 ]] || fail "load_small_stack: exit $status (139: it overflowed) — $(head -n 3 out.txt)"
fi

finish
