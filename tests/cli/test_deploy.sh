#!/usr/bin/env bash
# test_deploy.sh KILN SRCDIR — `kiln compile` end to end, from scratch in a temp dir:
# examples/char_gpt.json at B=1, T=16 is initialised, compiled to a .so + header, an .a
# and an .o; examples/deploy/deploy.c is built against each with cc and run, and its
# logits must equal `kiln run`'s bit for bit (both print %.9g, which gives back every f32
# exactly; JIT and AOT compile for the same host CPU). The artifacts may need only libc,
# libm and pthreads (nm -u, ldd, readelf NEEDED) and export only the four entry points;
# --target-cpu haswell gives assembly without zmm; two exported models link into one
# program; NAME_load, NAME_forward and NAME_set_threads report bad input by status; and
# failures (unknown extension, unwritable directory, a failing cc, a header that cannot be
# renamed, --target-features that LLVM would crash on) are diagnostics that leave an
# existing artifact untouched and no temporary behind, and so does an LLVM fatal error (simulated by an LD_PRELOAD shim).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
export PYTHONPATH=$src/scripts
cc=${CC:-cc}

gpt=$src/examples/char_gpt.json
dims=(-D B=1 -D T=16)
text="hello, kiln world"
run "init" "$kiln" init "$gpt" -o w.safetensors --seed 7 || finish

# kiln run's logits on the tokens deploy.c uses (the text's bytes, repeated to fill T)
"$py" - "$text" <<'EOF'
import sys
import numpy as np
import safetensors_np as st
t = sys.argv[1].encode()
st.write("x.safetensors", {"tokens": np.array([[t[i % len(t)] for i in range(16)]], dtype="<i4")})
EOF
run "kiln run" "$kiln" run "$gpt" --weights w.safetensors --inputs x.safetensors --out y.safetensors || finish
"$py" -c "
import safetensors_np as st
y = st.read('y.safetensors')['logits'].reshape(-1)
print('\n'.join('%.9g' % float(v) for v in y))" >expected.txt
[[ $(wc -l <expected.txt) -eq 4096 ]] || fail "kiln run gave $(wc -l <expected.txt) logits, expected 4096"

# ---- the three kinds of artifact, each driving deploy.c --------------------------------
run "compile .so" "$kiln" compile "$gpt" "${dims[@]}" -o libchar_gpt.so --header char_gpt.h || finish
run "compile .a" "$kiln" compile "$gpt" "${dims[@]}" -o libchar_gpt.a || finish
run "compile .o" "$kiln" compile "$gpt" "${dims[@]}" -o char_gpt.o || finish
[[ -z $(ls -A | grep '^\.kiln-') ]] || fail "temporaries left behind: $(ls -A | grep '^\.kiln-')"
grep -q '#define CHAR_GPT_PARAMS_BYTES' char_gpt.h || fail "header lacks CHAR_GPT_PARAMS_BYTES"
grep -q 'int char_gpt_forward(const float \*params, void \*workspace,' char_gpt.h || fail "header lacks char_gpt_forward"

cflags=(-std=c17 -Wall -Wextra -Werror -O2 -I.)
run "cc against the .so" "$cc" "${cflags[@]}" "$src/examples/deploy/deploy.c" -L. -lchar_gpt \
    -Wl,-rpath,"$work" -o deploy_so
run "cc against the .a" "$cc" "${cflags[@]}" "$src/examples/deploy/deploy.c" libchar_gpt.a -lm -o deploy_a
run "cc against the .o" "$cc" "${cflags[@]}" "$src/examples/deploy/deploy.c" char_gpt.o -lm -o deploy_o
for kind in so a o; do
    [[ -x deploy_$kind ]] || continue
    if run "deploy ($kind)" "./deploy_$kind" w.safetensors "$text"; then
        cp out.txt "got_$kind.txt"
        cmp -s expected.txt "got_$kind.txt" ||
            fail "deploy ($kind) logits differ from kiln run's: $(diff expected.txt "got_$kind.txt" | head -n 4 | tr '\n' ' ')"
    fi
done

# ---- what the artifacts depend on and export -------------------------------------------
libc=$("$cc" -print-file-name=libc.so.6)
libm=$("$cc" -print-file-name=libm.so.6)
{
    nm -D --defined-only "$libc" "$libm" 2>/dev/null | awk 'NF >= 3 {print $3}' | sed 's/@.*//'
} | sort -u >system_symbols.txt
for artifact in libchar_gpt.so libchar_gpt.a char_gpt.o; do
    # strong undefined symbols (weak ones such as __gmon_start__ come from crt files)
    nm -u "$artifact" | awk '$1 == "U" {print $2}' | sed 's/@.*//' | sort -u >undef.txt
    foreign=$(comm -23 undef.txt system_symbols.txt | tr '\n' ' ')
    [[ -z $foreign ]] || fail "$artifact needs symbols outside libc/libm: $foreign"
    grep -qx expf undef.txt || grep -qx memcpy undef.txt || fail "$artifact: nm -u looks empty: $(tr '\n' ' ' <undef.txt)"
    exported=$(nm -g --defined-only "$artifact" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[TDRB]$/ {print $3}' | sort | tr '\n' ' ')
    want="char_gpt_forward char_gpt_load char_gpt_params char_gpt_set_threads "
    [[ $exported == "$want" ]] || fail "$artifact exports '$exported', expected '$want'"
done
if ldd libchar_gpt.so >ldd.txt 2>&1; then
    grep -qi -e llvm -e kiln -e ffi -e cjson ldd.txt && fail "ldd shows a forbidden library: $(tr '\n' ' ' <ldd.txt)"
else
    fail "ldd libchar_gpt.so failed: $(head -n 3 ldd.txt)"
fi
needed=$(readelf -d libchar_gpt.so | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
for lib in $needed; do
    case $lib in libc.so.* | libm.so.* | libpthread.so.*) ;; *) fail "libchar_gpt.so needs $lib" ;; esac
done

# ---- target selection ---------------------------------------------------------------------
run "emit asm for haswell" "$kiln" compile "$gpt" "${dims[@]}" --emit asm --target-cpu haswell && {
    grep -q zmm out.txt && fail "--target-cpu haswell assembly uses zmm registers"
    grep -q ymm out.txt || fail "--target-cpu haswell assembly has no ymm (no AVX2 vector code?)"
    grep -q 'char_gpt_forward:' out.txt || fail "--emit asm lacks char_gpt_forward"
}
# a feature beside a named CPU keeps the CPU's vector width (it used to drop to SSE)
run "emit asm for haswell +f16c" "$kiln" compile "$gpt" "${dims[@]}" --emit asm --target-cpu haswell \
    --target-features +f16c && { grep -q ymm out.txt || fail "--target-cpu haswell --target-features +f16c: no ymm"; }
run "haswell .so" "$kiln" compile "$gpt" "${dims[@]}" -o libhaswell.so --target-cpu haswell &&
    objdump -d --no-show-raw-insn libhaswell.so | grep -q zmm && fail "--target-cpu haswell .so uses zmm"
# an unknown CPU is refused with the nearest valid name, not compiled for a generic CPU
if "$kiln" compile "$gpt" "${dims[@]}" -o libbad.so --target-cpu znver9 >out.txt 2>err.txt; then
    fail "--target-cpu znver9 was accepted"
else
    grep -q "unknown CPU 'znver9'; did you mean 'znver1'" err.txt || fail "--target-cpu znver9: $(head -c 300 err.txt)"
    grep -q "skylake-avx512" err.txt || fail "--target-cpu znver9 does not list the valid names"
    [[ -e libbad.so ]] && fail "--target-cpu znver9 left libbad.so"
fi
run "emit llvm" "$kiln" compile "$gpt" "${dims[@]}" --emit llvm && {
    grep -q '^define .*i32 @char_gpt_forward(' out.txt || fail "--emit llvm lacks the entry"
    grep -q '^define i32 @char_gpt_load' out.txt || fail "--emit llvm lacks char_gpt_load"
}
run "emit ir" "$kiln" compile "$gpt" "${dims[@]}" --emit ir -o graph.kir &&
    { grep -q '^graph char_gpt' graph.kir || fail "--emit ir -o graph.kir: $(head -n 1 graph.kir)"; }

# ---- two models in one program, and bad input by status -------------------------------------
tiny=$src/tests/conformance/cases/024_gpt_tiny/model.json
run "init tiny" "$kiln" init "$tiny" -o tiny.safetensors &&
    run "compile tiny" "$kiln" compile "$tiny" -D B=1 -D T=8 -o libgpt_tiny.a --header gpt_tiny.h
cat >two.c <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include "char_gpt.h"
#include "gpt_tiny.h"
#include "char_gpt.h"   /* include guards */
int main(int argc, char **argv)
{
    if (argc != 3) return 2;
    float *pa = aligned_alloc(64, (CHAR_GPT_PARAMS_BYTES + 63) / 64 * 64);
    float *pb = aligned_alloc(64, (GPT_TINY_PARAMS_BYTES + 63) / 64 * 64);
    void *wb = aligned_alloc(64, (GPT_TINY_WORKSPACE_BYTES + 63) / 64 * 64);
    static float logits[GPT_TINY_OUT_LOGITS_COUNT];
    int32_t tokens[GPT_TINY_IN_TOKENS_COUNT] = {0};
    printf("load %d %d\n", char_gpt_load(pa, argv[1]), gpt_tiny_load(pb, argv[2]));
    printf("wrong file %d, no file %d\n", gpt_tiny_load(pb, argv[1]), gpt_tiny_load(pb, "/nonexistent"));
    gpt_tiny_load(pb, argv[2]);
    printf("forward %d\n", gpt_tiny_forward(pb, wb, tokens, logits));
    tokens[3] = 17; /* vocab is 17 */
    printf("bad token %d\n", gpt_tiny_forward(pb, wb, tokens, logits));
    printf("threads %d %d\n", gpt_tiny_set_threads(0), gpt_tiny_set_threads(2));
    printf("params %d %s %d\n", CHAR_GPT_NUM_PARAMS + GPT_TINY_NUM_PARAMS, gpt_tiny_params[0].name,
           (int)gpt_tiny_params[0].shape[1]);
    return 0;
}
EOF
if run "cc with two models" "$cc" "${cflags[@]}" two.c libgpt_tiny.a libchar_gpt.a -lm -o two &&
    run "run two models" ./two w.safetensors tiny.safetensors; then
    printf 'load 0 0\nwrong file 4, no file 1\nforward 0\nbad token 1\nthreads 1 0\nparams 136 wte.weight 16\n' >two.ref
    cmp -s two.ref out.txt || fail "two models: $(tr '\n' '|' <out.txt), expected $(tr '\n' '|' <two.ref)"
fi
status=0
./deploy_so tiny.safetensors >/dev/null 2>err.txt || status=$?
[[ $status -eq 1 ]] && grep -q "wrong shape" err.txt || fail "deploy with the wrong weights: exit $status, $(cat err.txt)"

# ---- failures are diagnostics and leave nothing behind -------------------------------------
cp libchar_gpt.so keep.so
kiln_fails "unknown extension" 2 "must end in .so, .o or .a" compile "$gpt" -o out.dll
kiln_fails "no -o" 2 "-o OUT.so" compile "$gpt"
kiln_fails "unwritable directory" 1 "cannot write" compile "$gpt" "${dims[@]}" -o "$work/missing/dir/x.so"
KILN_CC=false kiln_fails "a failing cc" 1 "failed (exit 1)" compile "$gpt" "${dims[@]}" -o libchar_gpt.so \
    --header char_gpt.h
KILN_CC=/nonexistent/cc kiln_fails "a missing cc" 1 "cannot run" compile "$gpt" "${dims[@]}" -o libchar_gpt.so
# the header's rename fails (its path is a directory) after the library's: the library is
# put back as it was (checked with keep.so below), or removed when there was none
mkdir hdir.h
kiln_fails "a header that cannot be renamed" 1 "hdir.h: error: cannot write" compile "$gpt" "${dims[@]}" \
    -o libchar_gpt.so --header hdir.h
cat >tiny.json <<'EOF'
{"format": "kiln/1", "name": "tiny", "inputs": {"x": {"shape": [2, 4], "dtype": "f32"}},
 "layers": [{"name": "h", "op": "linear", "in": "x", "out": 3}], "outputs": ["h"]}
EOF
kiln_fails "a header that cannot be renamed, no library before" 1 "hdir.h: error: cannot write" compile tiny.json \
    -o libtiny.so --header hdir.h
[[ -e libtiny.so ]] && fail "a failed header write left a new libtiny.so"
# SIGTERM while a tool runs (a cc that only sleeps): the build directory goes with kiln
printf '#!/bin/sh\necho $$ >"%s/slow_cc.pid"\nexec sleep 20\n' "$work" >slow_cc && chmod +x slow_cc
KILN_CC=$work/slow_cc "$kiln" compile "$gpt" "${dims[@]}" -o libslow.so >/dev/null 2>&1 &
slow=$!
for _ in $(seq 100); do ls -A | grep -q '^\.kiln-' && break; sleep 0.1; done
ls -A | grep -q '^\.kiln-' || fail "kiln compile with a slow cc made no .kiln-XXXXXX directory in 10 s"
kill -TERM $slow
status=0
wait $slow || status=$?
[[ -s slow_cc.pid ]] && kill "$(cat slow_cc.pid)" 2>/dev/null || true
[[ $status -eq 143 ]] || fail "kiln compile killed by SIGTERM: exit $status, expected 143"
[[ -z $(ls -A | grep '^\.kiln-') ]] || fail "SIGTERM during kiln compile left $(ls -A | grep '^\.kiln-') behind"
# --target-features is checked before LLVM sees it (LLVM warned, crashed or stopped half-way)
for bad in "-sse2:the x86-64 baseline" "-sse:the x86-64 baseline" "+soft-float:'soft-float' is not supported" \
    "+bogus:unknown feature 'bogus'" "+avx2,+fmaa:did you mean 'fma'" "avx2:must be +NAME" "+avx2,,+fma:an empty item" \
    "+avx2,-avx2:names 'avx2' twice"; do
    kiln_fails "--target-features ${bad%%:*}" 2 "${bad#*:}" compile "$gpt" "${dims[@]}" -o libchar_gpt.so \
        --header char_gpt.h --target-cpu x86-64 --target-features "${bad%%:*}"
done
kiln_ok "--target-features +avx2,-avx512f" compile "$gpt" "${dims[@]}" --emit ir --target-features +avx2,-avx512f
# an LLVM fatal error while the object is written (a shim stands in for an LLVM bug) is
# kiln's internal error, and the half-written build is removed before the process ends
cat >fatal.c <<'EOF'
#include <fcntl.h>
#include <unistd.h>
/* llvm::report_fatal_error(const char *, bool): weak, so that the other programs the
 * preload reaches (grep) load without LLVM */
__attribute__((weak)) void _ZN4llvm18report_fatal_errorEPKcb(const char *reason, _Bool crash_diag);
int LLVMTargetMachineEmitToFile(void *tm, void *m, const char *path, int kind, char **err)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd >= 0 && write(fd, "\177ELF", 4) == 4) close(fd);
    _ZN4llvm18report_fatal_errorEPKcb("simulated by test_deploy.sh", 1);
    return 1;
}
EOF
run "build the LLVM-fatal shim" "$cc" -shared -fPIC -o fatal.so fatal.c &&
    LD_PRELOAD=$work/fatal.so ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
    kiln_fails "an LLVM fatal error" 134 "internal error in LLVM: simulated" compile "$gpt" \
        "${dims[@]}" -o libchar_gpt.so --header char_gpt.h
cmp -s keep.so libchar_gpt.so || fail "a failed compile changed the existing libchar_gpt.so"
[[ -z $(ls -A | grep '^\.kiln-') ]] || fail "temporaries left behind after failures: $(ls -A | grep '^\.kiln-')"
kiln_fails "bad --emit" 2 "not one of" compile "$gpt" --emit png

finish
