#!/usr/bin/env bash
# deps.sh — make sure kiln's build and test dependencies are installed (Debian 12).
# clang-19 and libclang-rt-19-dev (libFuzzer) build the fuzz targets (fuzz/README.md);
# graphviz's `dot` renders the training step's `--emit dot` picture (cli.test_dot_render).
# As root it installs whatever is missing with apt-get; otherwise it prints the exact
# apt-get line to run and fails.
set -euo pipefail

packages=(build-essential cmake pkg-config llvm-19-dev libcjson-dev libffi-dev libcmocka-dev
          python3-numpy fortunes valgrind libopenmpi-dev openmpi-bin clang-19 libclang-rt-19-dev graphviz)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "kiln needs these Debian packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && $line" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$line -qq >/dev/null
