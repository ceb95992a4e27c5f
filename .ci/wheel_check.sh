#!/usr/bin/env bash
# Wheel check, run by hand before a release, not by .ci/run: it installs every dependency into a
# new venv (129 s in all, measured on 2 cores); tests/test_packaging.py checks the wheel's
# contents in seconds and runs in CI.
#
# Builds a wheel from the working tree (the files git tracks or would track, copied to a scratch
# folder, so no build/ folder is left in the repository), installs it into a fresh venv (torch's
# local 2.13 CPU wheel first, as the README says), then, from a folder outside the repository so
# that nothing is imported from the source tree, runs `atat --help`, `atat config list` and a
# `--size test` training on a small corpus it writes itself. Passing proves that the installed
# package works on its own: entry point, dependencies, the shipped presets.
#
# Usage: bash .ci/wheel_check.sh [WORKDIR]   (default: a new temporary folder, removed at the end)
# Needs: python3.10+ with venv, git, and PyPI (or a pip cache) for the dependencies.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
[[ $# -ge 1 ]] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"
start=$SECONDS
step() { echo "== $1 (at $((SECONDS - start)) s)"; }

step "copy the working tree to $work/src"
rm -rf "$work/src" "$work/dist" "$work/venv" "$work/outside"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
    while IFS= read -r -d '' name; do
        [[ -e "$repo/$name" || -L "$repo/$name" ]] || continue  # deleted, not committed yet
        mkdir -p "$work/src/$(dirname "$name")"
        cp -P "$repo/$name" "$work/src/$name"  # -P: the configs link stays a link
    done

step "fresh venv, torch 2.13.0 (CPU wheel)"
python3 -m venv "$work/venv"
pip="$work/venv/bin/python -m pip"
$pip install -q torch==2.13.0

step "build the wheel"
$pip wheel -q --no-deps -w "$work/dist" "$work/src"
wheel=$(ls "$work/dist"/atat-*.whl)
echo "$(basename "$wheel"): $(python3 -c "import sys, zipfile; n = zipfile.ZipFile(sys.argv[1]).namelist(); print(len(n), 'files,', sum(x.endswith('.yaml') for x in n), 'presets')" "$wheel")"

step "install the wheel"
$pip install -q "$wheel"

mkdir -p "$work/outside"
cd "$work/outside"
export PATH="$work/venv/bin:$PATH" ATAT_DATA_DIR="$work/outside/data" ATAT_RUNS_DIR="$work/outside/runs"
where=$(python -c "import atat_cli; print(atat_cli.__file__)")
echo "atat_cli imported from $where"
[[ $where == "$work/venv/"* ]] || { echo "FAIL: atat_cli is not the installed one"; exit 1; }

step "atat --help"
atat --help > help.txt
head -n 12 help.txt
grep -q "config" help.txt || { echo "FAIL: atat --help lists no config command"; exit 1; }

step "atat config list"
atat config list | tee presets.txt
for preset in sizes/test grids/atat atat/seed; do
    grep -q "^$preset " presets.txt || { echo "FAIL: $preset is not listed"; exit 1; }
done

step "atat train --size test on a small corpus"
python - <<'EOF'
import random

rng = random.Random(0)
words = "the model masks tokens and learns to fill them back in from context".split()
docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) + "." for _ in range(120)]
open("corpus.txt", "w").write("\n\n".join(docs) + "\n")
EOF
atat data fetch corpus.txt --name tinytext --tokenizer bytes
atat train --size test --max-steps 4 --data tinytext --no-sample --json \
    --set train.precision=fp32 --set train.batch_size=4 --set train.eval_batches=1 \
    --set train.eval_every=2 --set optim.warmup_steps=2 | tee train.json
python -c "import json; s = json.load(open('train.json')); assert s['step'] == 4 and s['best_val_nelbo'] is not None, s"

step "passed"
