# recipe.sh — the start every examples/*/run.sh shares; sourced as
#   . "$(dirname "$0")/../recipe.sh" "$@"
# It reads the command line (--tiny, --out DIR, and --sweep for a recipe that sets
# recipe_sweep=1 before sourcing) and the environment (TINY=1, KILN=path of a kiln binary
# instead of building one, PYTHON, THREADS, default 2), and sets here, root, tiny, sweep,
# out (default: the recipe's folder/out), kiln, py and threads.
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tiny=${TINY:-0}
sweep=0
out=$here/out
recipe_usage="usage: $0 [--tiny] [--out DIR]"
if [ "${recipe_sweep:-0}" = 1 ]; then recipe_usage="usage: $0 [--tiny] [--sweep] [--out DIR]"; fi
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) tiny=1 ;;
    --out) out=$2; shift ;;
    --sweep) [ "${recipe_sweep:-0}" = 1 ] || { echo "$recipe_usage" >&2; exit 2; }; sweep=1 ;;
    *) echo "$recipe_usage" >&2; exit 2 ;;
  esac
  shift
done
kiln=${KILN:-$("$root/scripts/build.sh" "$root/build" | tail -n 1)}
py=${PYTHON:-/usr/bin/python3}
threads=${THREADS:-2}
