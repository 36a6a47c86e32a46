"""merge-bench: merge LoRA experts and benchmark the merge methods.

The package has wings, imported one way only (a test enforces it):
``commands → leaderboard → bench → evaluation → backbones → merging → io``.
``merge_bench.merge`` is the one-call merge API (``merging/api.py``), loaded on first use so that
``import merge_bench`` (and ``merge-bench --help``) does not import torch.
"""
__version__ = "0.1.0"

__all__ = ["merge", "__version__"]


def __getattr__(name: str):
    if name == "merge":
        from .merging.api import merge

        return merge
    raise AttributeError(f"module 'merge_bench' has no attribute {name!r}")
