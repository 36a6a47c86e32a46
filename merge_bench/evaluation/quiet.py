"""What we silence of lm-eval, and why (the bars of transformers and datasets: ``io/console.py``).

A run shows one merge-bench progress bar. Left alone, transformers shows a bar at every model load,
datasets one at every data load (both silenced by ``io.console``), each lm-eval call adds a "Building contexts" bar
and a "Running generate_until requests" bar (hundreds of blank lines over a run) and logs notices meant
for its own CLI. (Its git probe, which prints "fatal: not a git repository" outside a checkout, is
skipped in ``harness.run_lm_eval``.) ``--verbose`` (``quiet(verbose=True)``) keeps all of it.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager
from typing import Iterator

from ..io.console import no_library_bars

# Notices that are advice for lm-eval's own CLI, or expected for how we drive it.
NOTICES = (
    "Custom kwargs can be passed",  # at every load of a task with a custom_dataset hook
    "`pretrained` model kwarg is not of type `str`",  # we hand HFLM the model we keep in memory
    "Passed an already-initialized model through `pretrained`",
    # flan-t5 keeps its own lm_head, as it should (see hf_backend on tie_weights)
    "but both are present in the checkpoints with different values, so we will NOT tie them",
)
# lm-eval modules that log those notices or create a tqdm bar of their own (a logger's filter sees only
# records logged on that logger, so each module's logger gets it).
MODULES = ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.evaluator", "lm_eval.models.huggingface",
           "lm_eval.models.vllm_causallms", "transformers.modeling_utils")


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in NOTICES)


_FILTER = _DropNotices()


@contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Silence lm-eval's bars, its git probe and its CLI notices while the block runs."""
    if verbose:
        yield
        return
    import lm_eval.evaluator  # noqa: F401  (loads the modules whose bars and git probe are patched)

    with ExitStack() as stack:
        for name in MODULES:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
                stack.callback(logger.removeFilter, _FILTER)
        stack.enter_context(no_library_bars(MODULES))
        yield
