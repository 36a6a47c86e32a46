"""The console: a run shows one merge-bench progress bar. This turns off the bars of the libraries
underneath (transformers at every model load, datasets at every data load, and modules that create a
raw tqdm of their own) for the length of a block. ``evaluation/quiet.py`` adds lm-eval's notices."""
from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from typing import Iterator, Sequence
from unittest import mock


def _silent_tqdm(*args, **kwargs):
    from tqdm import tqdm

    kwargs["disable"] = True
    return tqdm(*args, **kwargs)


@contextmanager
def no_library_bars(tqdm_modules: Sequence[str] = ()) -> Iterator[None]:
    """No transformers or datasets bars, and a disabled tqdm in each of ``tqdm_modules`` that is loaded
    (patching only what is loaded: importing a module just to silence it can cost seconds)."""
    import datasets
    from transformers.utils import logging as hf_logging

    toggles = [(hf_logging.is_progress_bar_enabled(), hf_logging.disable_progress_bar, hf_logging.enable_progress_bar),
               (datasets.is_progress_bar_enabled(), datasets.disable_progress_bars, datasets.enable_progress_bars)]
    with ExitStack() as stack:
        for was_enabled, disable, enable in toggles:
            disable()
            if was_enabled:
                stack.callback(enable)
        for name in tqdm_modules:
            module = sys.modules.get(name)
            if module is not None and hasattr(module, "tqdm"):
                stack.enter_context(mock.patch.object(module, "tqdm", _silent_tqdm))
        yield
