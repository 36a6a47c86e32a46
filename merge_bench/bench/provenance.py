"""What every result records about where it came from: versions, hardware, git commit, merge code."""
from __future__ import annotations

import hashlib
import inspect
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in (("torch", "torch"), ("transformers", "transformers"), ("peft", "peft"),
                      ("lm_eval", "lm_eval"), ("vllm", "vllm")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    return out


LOCK = Path(__file__).parents[1] / "constraints.txt"  # the evaluation stack's versions (pip constraints)


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """``{distribution: version}`` from the lock (names normalized as pip does: lower case, ``_`` → ``-``)."""
    out = {}
    for line in lock.read_text().splitlines():
        name, sep, pinned = line.split("#", 1)[0].strip().partition("==")
        if sep:
            out[name.strip().lower().replace("_", "-")] = pinned.strip()
    return out


def lock_mismatches(found: dict[str, str | None], lock: Path = LOCK) -> list[str]:
    """``"transformers 5.24.0 (the lock pins 5.25.0)"`` for each recorded version that differs from the lock
    (a local build label such as ``+cpu`` is not a difference; a package the lock does not pin is not checked)."""
    pinned = locked_versions(lock) if lock.is_file() else {}
    out = []
    for name, have in found.items():
        want = pinned.get(name.lower().replace("_", "-"))
        if want is not None and have is not None and have.split("+")[0] != want.split("+")[0]:
            out.append(f"{name} {have} (the lock pins {want})")
    return out


def hardware(device: str) -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None
    return {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "gpu": gpu}


def git_commit() -> str | None:
    """HEAD of the source checkout, with ``+dirty`` when the package's files differ from it (a result
    must not claim a commit whose code did not produce it); None outside a git checkout."""
    here = Path(__file__).parents[1]

    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None

    head = git("rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    status = git("status", "--porcelain", "--untracked-files=no", "--", str(here))
    dirty = status is not None and status.returncode == 0 and status.stdout.strip() != ""
    return head.stdout.strip() + ("+dirty" if dirty else "")


# The merging wing's files whose code decides a merged delta: the task vector maths, the input reading
# (LoRA scales, name mapping), the engine and every built-in method.
MERGE_CODE = ("delta.py", "numerics.py", "selection.py", "adapters.py", "engine.py", "methods/*.py")


def merge_code_sha256(cls: type) -> str:
    """A hash of the source that computes ``cls``'s merges: the package's merge code (MERGE_CODE)
    plus the class's own file when it lives outside the package (a plugin method).

    Cached evaluations of merged models are keyed by it, so a change to the maths evaluates again
    instead of reading back a score of the old code (conservative: a comment edit does too).
    """
    root = Path(__file__).parents[1] / "merging"
    files = sorted({p for pattern in MERGE_CODE for p in root.glob(pattern)})
    own = inspect.getsourcefile(cls)
    if own is not None and Path(own).resolve() not in {f.resolve() for f in files}:
        files.append(Path(own))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() if f.is_relative_to(root) else f.name.encode())
        digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()
