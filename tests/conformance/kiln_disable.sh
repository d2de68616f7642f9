#!/bin/sh
# kiln_disable.sh KILN PASS ARGS... — runs `KILN ARGS... --disable-pass PASS`, so that
# check.py can run every conformance case with one compiler pass turned off.
k=$1
p=$2
shift 2
exec "$k" "$@" --disable-pass "$p"
