"""Where a run's record goes: ``--out`` checked before the first evaluation, and a record that cannot be
written there saved somewhere else rather than lost (an evaluated run can take hours)."""
from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ..io.files import cache_root, write_json_atomic


def check_out_dir(out: Path) -> None:
    """ValueError unless ``out`` is (or can become) a writable directory; creates it."""
    out = Path(out)
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "--out" if existing == out else f"--out {out}: its parent"
        raise ValueError(f"{what} {existing} is a file; expected a directory for the run records")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {out} is not a writable directory ({err.strerror or err}); "
                         "expected a directory the run records can be written to") from None


def save_record(path: Path, record: dict[str, Any], samples: list[dict[str, Any]] | None = None) -> Path:
    """Write ``record`` to ``path``; if that fails, to ``$MERGE_BENCH_CACHE/runs/`` (then the temp folder),
    with a warning naming both. Returns where it went. ``samples`` (``bench.samples``) go beside it."""
    path = Path(path)
    fallbacks = [cache_root() / "runs" / path.name, Path(tempfile.gettempdir()) / "merge-bench-runs" / path.name]
    errors = []
    for target in (path, *fallbacks):
        try:
            write_json_atomic(target, record)
            if samples is not None:
                from .samples import write

                write(target, samples)
        except OSError as err:
            errors.append(f"{target}: {err.strerror or err}")
            continue
        if target != path:
            print(f"warning: could not write the run record to {path} ({errors[0].split(': ', 1)[1]}); "
                  f"saved it to {target}", file=sys.stderr)
        return target
    raise OSError("could not write the run record anywhere: " + "; ".join(errors))


__all__ = ["check_out_dir", "save_record"]
