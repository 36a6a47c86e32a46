"""merge-bench: merge LoRA experts and benchmark the merge methods."""
__version__ = "0.1.0"
