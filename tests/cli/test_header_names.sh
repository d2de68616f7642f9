#!/usr/bin/env bash
# test_header_names.sh KILN SRCDIR — the exported header compiles whatever the model's
# names are (SPEC section 6: names match [A-Za-z_][A-Za-z0-9_]*, and the header is
# "guarded so that several exported models can be included in one program"):
#   - inputs and outputs named after C++ keywords (class, new), <stdint.h>'s and
#     <stddef.h>'s names (int32_t, NULL, INT8_MAX), GCC's predefined macros (linux) and
#     differing only in case (x, X, whose _COUNT macros must differ too): the header
#     compiles as C89, C17, gnu17, C++98 and C++17 with -pedantic -Werror, and a call
#     through its prototype runs;
#   - two models whose macros collide (`lm` with --train and `lm_train` both name
#     LM_TRAIN_WORKSPACE_BYTES) stop a program that includes both at the preprocessor,
#     instead of one silently taking the other's sizes; models that do not collide
#     include together;
#   - inputs named after the header's own macros (MAC_PARAMS_BYTES) or <stdio.h>'s and
#     <errno.h>'s (EOF, errno), and long names equal in their first 60 characters, give
#     distinct argument names, and the header compiles after those headers;
#   - a model path containing "*/" does not end the header's comment.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
cc=${CC:-cc}
cxx=${CXX:-c++}

cat >names.json <<'EOF'
{"format": "kiln/1", "name": "names", "dims": {},
 "inputs": {"class": {"shape": [2, 4], "dtype": "f32"}, "int32_t": {"shape": [2, 3], "dtype": "f32"},
            "NULL": {"shape": [2, 3], "dtype": "f32"}, "linux": {"shape": [2, 3], "dtype": "f32"},
            "x": {"shape": [2, 3], "dtype": "f32"}, "X": {"shape": [2, 3], "dtype": "f32"},
            "INT8_MAX": {"shape": [2, 3], "dtype": "f32"}},
 "layers": [{"name": "h", "op": "linear", "in": "class", "out": 3},
            {"name": "a", "op": "add", "in": ["h", "int32_t"]}, {"name": "b", "op": "add", "in": ["a", "NULL"]},
            {"name": "c", "op": "add", "in": ["b", "linux"]}, {"name": "d", "op": "add", "in": ["c", "x"]},
            {"name": "e", "op": "add", "in": ["d", "X"]}, {"name": "new", "op": "add", "in": ["e", "INT8_MAX"]}],
 "outputs": ["new", "h"]}
EOF
kiln_ok "compile names.json" compile names.json -o libnames.a --header names.h
grep -q '_IN_X_COUNT 6' names.h && grep -q '_IN_X__COUNT 6' names.h ||
    fail "inputs x and X do not get distinct _COUNT macros: $(grep '_IN_X' names.h | tr '\n' ' ')"

# every argument passed by position: the prototype's names are what is under test
cat >use_names.c <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include "names.h"
int main(void)
{
    char *raw_params = (char *)calloc(1, NAMES_PARAMS_BYTES + 64), *raw_ws = (char *)calloc(1, NAMES_WORKSPACE_BYTES + 64);
    /* 64-byte aligned, as the entry points check (aligned_alloc is not C89's) */
    float *params = (float *)(raw_params + (64 - (size_t)raw_params % 64) % 64);
    float *ws = (float *)(raw_ws + (64 - (size_t)raw_ws % 64) % 64);
    float in[7][8] = {{0}}, out[6], h[6];
    int i;
    for (i = 0; i < 6; i++) in[1][i] = in[2][i] = in[3][i] = in[4][i] = in[5][i] = in[6][i] = 1.0f;
    if (names_forward(params, ws, in[0], in[1], in[2], in[3], in[4], in[5], in[6], out, h) != 0) return 1;
    for (i = 0; i < 6; i++)
        if (out[i] != 6.0f) return 2; /* zero weights: h = 0, then six inputs of 1 */
    free(raw_params), free(raw_ws);
    puts("ok");
    return 0;
}
EOF
for std in c89 c17 gnu17; do
    run "the header as -std=$std -pedantic -Werror" "$cc" -std=$std -Wall -Wextra -pedantic -Werror -I. \
        -c use_names.c -o use_names_$std.o
done
cp use_names.c use_names.cpp
for std in c++98 c++17; do
    run "the header as -std=$std -pedantic -Werror" "$cxx" -std=$std -Wall -Wextra -pedantic -Werror -I. \
        -c use_names.cpp -o use_names_$std.o
done
# the answer checks the call: zero weights, every input 1
if run "link use_names.c" "$cc" use_names_c17.o libnames.a -lm -lpthread -o use_names; then
    run "run use_names" ./use_names && grep -q ok out.txt || fail "a forward pass through names.h did not give 6"
fi

# ---- two models in one program ----------------------------------------------------------
lm() { # lm NAME — a two-layer model with a loss, named NAME
    cat <<EOF
{"format": "kiln/1", "name": "$1", "dims": {"B": 1, "T": 8},
 "inputs": {"tokens": {"shape": ["B", "T"], "dtype": "i32"}, "targets": {"shape": ["B", "T"], "dtype": "i32"}},
 "layers": [{"name": "wte", "op": "embedding", "in": "tokens", "vocab": 16, "dim": 8},
            {"name": "logits", "op": "linear", "out": 16}],
 "outputs": ["logits"], "losses": [{"op": "cross_entropy", "in": ["logits", "targets"]}],
 "train": {"optimizer": "adamw", "lr": 0.01}}
EOF
}
lm lm >lm.json
lm lm_train >lm_train.json
lm other >other.json
kiln_ok "compile lm --train" compile lm.json --train -o liblm.a --header lm.h
kiln_ok "compile lm_train" compile lm_train.json -o liblm_train.a --header lm_train.h
kiln_ok "compile other" compile other.json -o libother.a --header other.h
printf '#include "lm.h"\n#include "lm_train.h"\nint main(void) { return 0; }\n' >clash.c
if "$cc" -std=c17 -I. -c clash.c -o clash.o 2>err.txt; then
    fail "lm.h (--train) and lm_train.h both define LM_TRAIN_WORKSPACE_BYTES, and a program including both compiled"
elif ! grep -q "already defined by another header" err.txt; then
    fail "the clash of lm.h and lm_train.h failed without the header's message: $(head -n 3 err.txt)"
fi
printf '#include "lm.h"\n#include "other.h"\n#include "lm.h"\nint main(void) { return 0; }\n' >both.c
run "lm.h, other.h and lm.h again in one file" "$cc" -std=c17 -Wall -Werror -I. -c both.c -o both.o

# ---- names that are macros, and long names --------------------------------------------------
# inputs named after the header's own macros and <stdio.h>'s / <errno.h>'s (the header
# included after them, as usual), and six 70-character names equal in their first 60
# (arguments are cut at 60): every argument name distinct, the header compiles
long=$(printf 'a%.0s' {1..60})
"$py" - "$long" >macros.json <<'EOF'
import json, sys
long = sys.argv[1]
names = ["MAC_PARAMS_BYTES", "MAC_NUM_PARAMS", "KILN_PARAM_INFO_DEFINED", "EOF", "errno"] + \
        [long + c * 10 for c in "ABCDEF"]
layers, prev = [], names[0]
for i, n in enumerate(names[1:]):
    layers.append({"name": "s%d" % i, "op": "add", "in": [prev, n]})
    prev = "s%d" % i
print(json.dumps({"format": "kiln/1", "name": "mac", "dims": {},
                  "inputs": {n: {"shape": [2], "dtype": "f32"} for n in names},
                  "layers": layers, "outputs": [prev]}))
EOF
kiln_ok "compile macros.json" compile macros.json -o libmac.a --header mac.h
printf '#include <stdio.h>\n#include <errno.h>\n#include "mac.h"\nint main(void) { return 0; }\n' >mac.c
for std in c89 c17; do
    run "mac.h after <stdio.h>, <errno.h> as -std=$std" "$cc" -std=$std -Wall -Wextra -pedantic -Werror -I. -c mac.c -o mac.o
done
cp mac.c mac.cpp
run "mac.h after <stdio.h>, <errno.h> as C++98" "$cxx" -std=c++98 -Wall -Wextra -pedantic -Werror -I. -c mac.cpp -o mac.o
# ordinary names keep their names (programs use the _COUNT macros)
grep -q 'const int32_t \*tokens /\*' lm.h && grep -q '^#define LM_IN_TOKENS_COUNT 8 ' lm.h ||
    fail "input tokens is no longer the argument tokens / LM_IN_TOKENS_COUNT: $(grep -i tokens lm.h | tr '\n' ' ')"

# ---- a path with "*/" ---------------------------------------------------------------------
mkdir 'dir*'
cp other.json 'dir*/other.json'
kiln_ok "compile a model under 'dir*/'" compile 'dir*/other.json' -o libstar.a --header star.h
printf '#include "star.h"\nint main(void) { return 0; }\n' >star.c
run "a header whose model path holds '*/'" "$cc" -std=c17 -Wall -Werror -I. -c star.c -o star.o
finish
