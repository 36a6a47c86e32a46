"""merge-bench: merge LoRA experts and benchmark the merge methods."""
__version__ = "0.1.0"

from .api import merge  # noqa: E402

__all__ = ["merge", "__version__"]
