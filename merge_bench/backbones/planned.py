"""What building a locally built base would do, known without building it (for ``run --dry-run``).

A backbone's ``local_base`` builder may carry a ``planned`` attribute: a function returning a
``PlannedBase``. The dry run calls it instead of the builder, so a "dry" run writes nothing big."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PlannedBase:
    path: Path  # where the base is (or would be) built
    ready: bool  # built already
    params: int  # parameters of the model
    size_bytes: int  # what building it writes
