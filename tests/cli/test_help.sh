#!/usr/bin/env bash
# test_help.sh KILN SRCDIR — the command line describes itself, and the docs agree:
#   - `kiln --version` prints kiln's version (CMake's project version) and LLVM's;
#   - `kiln`, `kiln --help` and `kiln help` list every command (status 2, 0, 0);
#   - for every command, `kiln CMD --help` and `kiln help CMD` print the same text with
#     status 0: the usage line and one line per flag, each saying what it does and its
#     default (or that it is required);
#   - the usage line shows exactly the flags the command takes; and those are exactly
#     those of the command's section in docs/cli.md (its tables' first cells) and of
#     its row in README.md's command table (the "flags" cell);
#   - --disable-pass and --dump-after name in --help the stages docs/cli.md names;
#   - an unknown option is a usage error that points at --help.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

"$py" - "$kiln" "$src" <<'PY'
import re, subprocess, sys

kiln, src = sys.argv[1], sys.argv[2]
failures = []

def run(*args):
    p = subprocess.run([kiln, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr

# ---- --version --------------------------------------------------------------------------------
project = re.search(r"project\(kiln VERSION ([0-9.]+)", open(f"{src}/CMakeLists.txt").read()).group(1)
status, out, _ = run("--version")
if status != 0 or not re.fullmatch(rf"kiln {re.escape(project)} \(LLVM 19\.\d+\.\d+\)\n", out):
    failures.append(f"--version: status {status}, {out!r} (want 'kiln {project} (LLVM 19.x.y)')")

# ---- the overview ------------------------------------------------------------------------------
status, overview, _ = run("--help")
if status != 0:
    failures.append(f"kiln --help: status {status}")
if run("help")[:2] != (0, overview):
    failures.append("kiln help differs from kiln --help")
status, _, err = run()
if status != 2 or err != overview:
    failures.append(f"kiln alone: status {status}, and not the overview on stderr")
commands = re.findall(r"^  ([a-z]+) {2,}\S", overview.split("commands:", 1)[1], re.M)
commands = [c for c in commands if c != "help"]
if len(commands) < 8:
    failures.append(f"the overview lists only {commands}")

# ---- per command --------------------------------------------------------------------------------
readme = open(f"{src}/README.md").read()
cli_md = open(f"{src}/docs/cli.md").read()
FLAG = r"(?<![\w-])(--?[A-Za-z][\w-]*)"

def doc_flags(cmd):
    """The flags named in the first cells of the tables of docs/cli.md's section on cmd."""
    m = re.search(rf"^## `kiln {cmd}`.*?$(.*?)(?=^## |\Z)", cli_md, re.M | re.S)
    if not m:
        return None
    flags = set()
    for line in m.group(1).splitlines():
        if line.startswith("| `-"):
            flags |= set(re.findall(r"`(--?[A-Za-z][\w-]*)", line.split("|")[1]))
    return flags

def readme_flags(cmd):
    """The flags in the third cell of README.md's command-table row for cmd."""
    for line in readme.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 5 and re.match(rf"`kiln {cmd}[ `]", cells[1]):
            return set(re.findall(r"`(--?[A-Za-z][\w-]*)", cells[3]))
    return None

for cmd in commands:
    status, text, err = run(cmd, "--help")
    if status != 0 or err:
        failures.append(f"kiln {cmd} --help: status {status}, stderr {err!r}")
        continue
    if run("help", cmd)[:2] != (0, text):
        failures.append(f"kiln help {cmd} differs from kiln {cmd} --help")
    lines = text.splitlines()
    if not lines or not lines[0].startswith(f"usage: kiln {cmd}"):
        failures.append(f"kiln {cmd} --help: no usage line first: {lines[:1]}")
        continue
    usage = lines[0]
    listed, helps = [], {}
    for i, line in enumerate(lines):
        m = re.match(r"^  (-\S+?)(?:,|\s|$)", line)
        if not m or m.group(1) == "-h":
            continue
        flag = m.group(1)
        listed.append(flag)
        rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        helps[flag] = rest[1] if len(rest) > 1 else (lines[i + 1].strip() if i + 1 < len(lines) else "")
    if len(set(listed)) != len(listed):
        failures.append(f"kiln {cmd} --help lists a flag twice: {listed}")
    listed = set(listed)
    for flag, h in helps.items():
        if flag != "-D" and not re.search(r"\b(default|required)\b", h):
            failures.append(f"kiln {cmd} --help: {flag} does not say its default: {h!r}")
    shown = set(re.findall(FLAG, usage.split(f"kiln {cmd}", 1)[1])) - {"-h", "--help"}
    if shown - listed:
        failures.append(f"kiln {cmd}: the usage line shows {sorted(shown - listed)}, which the command does not take")
    if listed - shown:
        failures.append(f"kiln {cmd}: the usage line omits {sorted(listed - shown)}")
    for where, flags in (("docs/cli.md", doc_flags(cmd)), ("README.md's command table", readme_flags(cmd))):
        if flags is None:
            failures.append(f"{where} has no entry for kiln {cmd}")
        elif flags != listed:
            failures.append(f"kiln {cmd}: {where} and --help disagree: only in --help {sorted(listed - flags)}, "
                            f"only in {where} {sorted(flags - listed)}")

# ---- the pipeline's stages: --help names the ones docs/cli.md names -----------------------------
doc = open(f"{src}/docs/cli.md").read()
def doc_stages(flag):  # the backticked names in the meaning cell of the pipeline table's row, before ";"
    row = re.search(rf"^\| `{flag} STAGE[^|]*\| ([^;]*)", doc, re.M).group(1)
    return set(re.findall(r"`([a-z]+)`", row))
for cmd in commands:
    status, out, _ = run(cmd, "--help")
    for flag, lead in (("--disable-pass", "stages:"), ("--dump-after", "a stage:")):
        m = re.search(rf"{flag} .*?{lead} ([^;(]*)", out, re.S)
        if not m:
            continue
        names = set(re.findall(r"[a-z]+", m.group(1))) - {"or"}
        if names != doc_stages(flag):
            failures.append(f"kiln {cmd} --help: {flag} names {sorted(names)}, docs/cli.md {sorted(doc_stages(flag))}")

# ---- an unknown option -----------------------------------------------------------------------
status, _, err = run("check", "--nope")
if status != 2 or "--nope: error: unknown option for this command" not in err or "kiln check --help" not in err:
    failures.append(f"an unknown option: status {status}, {err!r}")

for f in failures:
    print("FAIL:", f)
if failures:
    sys.exit(1)
print(f"help, version and docs agree for {len(commands)} commands: {', '.join(commands)}")
PY
