#!/usr/bin/env bash
# test_compile_cache.sh KILN SRCDIR — the JIT's compile cache from the command line
# (docs/cli.md, "The compile cache"):
#   - `kiln generate` and `kiln train` give the same bits compiling (a miss, which saves
#     entries), from the cache (a hit), and with the cache off (KILN_CACHE_DIR=off, which
#     writes nothing); a cache whose every entry was damaged gives them too (misses);
#   - where it lives: KILN_CACHE_DIR, else $XDG_CACHE_HOME/kiln, else ~/.cache/kiln,
#     created with mode 0700;
#   - a KILN_CACHE_DIR that others may write to is refused with a warning, and the command
#     still works (without the cache);
#   - `kiln bench`, which times compiles, and `kiln check`, which does not compile, never
#     touch it; `kiln --help` names KILN_CACHE_DIR.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
model=$src/tests/cli/generate/gen_rope.json
unset XDG_CACHE_HOME
export HOME=$work/home
mkdir -p "$HOME"
head -c 6000 "$src/README.md" >text.txt
KILN_CACHE_DIR=off kiln_ok "init" init "$model" -o w.safetensors --seed 3
count() { find "$1" -name '*.kobj' 2>/dev/null | wc -l; }
# a hit reads an entry, a miss writes it anew (a new file renamed over it): new inodes
inodes() { stat -c '%n %i' "$1"/*.kobj | sort; }

gen() { # gen OUT — generate with top-p sampling, the JSON (ids and log-probabilities) to OUT
    kiln_ok "generate ($1)" generate "$model" --weights w.safetensors --prompt "Once" --max-new 20 --seed 5 \
        --top-p 0.9 --json && cp out.txt "$1"
}
train() { # train OUT — 4 steps with dropout off; the losses to OUT
    kiln_ok "train ($1)" train "$model" --data text.txt --steps 4 --log log.jsonl --seed 2 &&
        $py -c 'import json,sys; print([json.loads(l)["loss"] for l in open("log.jsonl")])' >"$1"
}

# --- miss, hit, off: the same bits ---
export KILN_CACHE_DIR=$work/cache
gen gen_miss.json
train train_miss.txt
n=$(count "$KILN_CACHE_DIR")
[[ $n -ge 4 ]] || fail "the compiles saved $n entries, expected at least 4 (prefill, bucket, step, training step)"
[[ $(stat -c %a "$KILN_CACHE_DIR") == 700 ]] || fail "the cache directory's mode is $(stat -c %a "$KILN_CACHE_DIR"), not 700"
inodes "$KILN_CACHE_DIR" >before.txt
gen gen_hit.json
train train_hit.txt
inodes "$KILN_CACHE_DIR" >after.txt
cmp -s before.txt after.txt || fail "the second runs wrote entries: they missed"
KILN_CACHE_DIR=off gen gen_off.json
KILN_CACHE_DIR=off train train_off.txt
[[ $(count "$KILN_CACHE_DIR") -eq $n ]] || fail "KILN_CACHE_DIR=off wrote entries"
[[ ! -e $HOME/.cache ]] || fail "KILN_CACHE_DIR=off made ~/.cache"
cmp -s gen_miss.json gen_hit.json || fail "generate: from the cache differs from compiled"
cmp -s gen_miss.json gen_off.json || fail "generate: without the cache differs from compiled"
cmp -s train_miss.txt train_hit.txt || fail "train: from the cache differs from compiled: $(cat train_miss.txt train_hit.txt)"
cmp -s train_miss.txt train_off.txt || fail "train: without the cache differs"

# --- every entry damaged: misses, written anew, the same bits ---
for f in "$KILN_CACHE_DIR"/*.kobj; do
    printf '\xff\xff\xff\xff' | dd of="$f" bs=1 seek=2000 conv=notrunc status=none
done
gen gen_damaged.json
cmp -s gen_miss.json gen_damaged.json || fail "generate: with damaged entries differs"
inodes "$KILN_CACHE_DIR" >rewritten.txt
[[ $(comm -12 after.txt rewritten.txt | wc -l) -eq $((n - 3)) ]] ||
    fail "generate did not write its three damaged entries anew: $(comm -12 after.txt rewritten.txt)"
gen gen_rewritten.json
cmp -s gen_miss.json gen_rewritten.json || fail "generate: from the rewritten entries differs"

# --- where it lives ---
unset KILN_CACHE_DIR
gen gen_home.json
[[ $(count "$HOME/.cache/kiln") -ge 3 ]] || fail "without KILN_CACHE_DIR nothing was saved in ~/.cache/kiln"
XDG_CACHE_HOME=$work/xdg gen gen_xdg.json
[[ $(count "$work/xdg/kiln") -ge 3 ]] || fail "nothing was saved in \$XDG_CACHE_HOME/kiln"
cmp -s gen_miss.json gen_home.json && cmp -s gen_miss.json gen_xdg.json || fail "generate differs by cache directory"

# --- refused: a directory others may write to ---
mkdir -m 777 open
chmod 777 open
KILN_CACHE_DIR=$work/open gen gen_open.json
grep -q "warning: KILN_CACHE_DIR: .*others may write to it" err.txt ||
    fail "a world-writable KILN_CACHE_DIR gave no warning: $(head -n 3 err.txt)"
[[ $(count open) -eq 0 ]] || fail "entries were saved in a world-writable directory"
cmp -s gen_miss.json gen_open.json || fail "generate without a usable cache differs"

# --- bench and check do not use it ---
KILN_CACHE_DIR=$work/bench_cache kiln_ok "bench" bench "$model" --iters 1
KILN_CACHE_DIR=$work/bench_cache kiln_ok "check" check "$model"
[[ ! -e $work/bench_cache ]] || fail "kiln bench or kiln check made the cache directory"
# --- kiln --help names it ---
kiln_ok "help" --help
grep -q "KILN_CACHE_DIR" out.txt || fail "kiln --help does not name KILN_CACHE_DIR"
finish
