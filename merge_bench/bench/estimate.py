"""What a run will cost before it runs (``run --dry-run``): the memory the base model's weights take at the
run's dtype, the disk a download or a local conversion writes, and the models that are missing.

Sizes come from the model itself wherever it is local (the safetensors headers, or the GGUF the tiny base is
converted from), else from the published parameter counts below. Peak memory is at least the weights at the
run's dtype; activations, the KV cache and a dense merge's deltas come on top.

A base built locally says what building it would write through ``backbones.planned``.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from ..backbones.planned import PlannedBase

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Published parameter counts and checkpoint dtypes of the real backbones' bases (their model cards and
# safetensors headers), for a plan made before anything is downloaded.
PUBLISHED = {
    "mistralai/Mistral-7B-Instruct-v0.2": (7_241_732_096, "bfloat16"),
    "meta-llama/Llama-3.2-3B-Instruct": (3_212_749_824, "bfloat16"),
    "google/flan-t5-large": (783_150_080, "float32"),
}


def safetensors_params(model_dir: Path) -> int | None:
    """Parameters in a model directory, from its safetensors headers (no tensor is read); None without any."""
    total, files = 0, sorted(Path(model_dir).glob("*.safetensors"))
    for path in files:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total if files else None


def human(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def footprint(base_id: str, base_dir: Path | None, planned: PlannedBase | None, dtype: str) -> dict:
    """{"params", "memory_bytes", "disk_bytes", "lines"} for the base: weights at ``dtype`` in memory, and what
    the run writes to disk first (a download or a conversion; 0 when the base is already local)."""
    params, disk, lines = None, 0, []
    if planned is not None:
        params = planned.params
        if not planned.ready:
            disk = planned.size_bytes
            lines.append(f"disk: the base is converted on the first run into {planned.path} "
                         f"(about {human(disk)}); a dry run does not convert it")
    elif base_dir is not None:
        params = safetensors_params(base_dir)
    elif base_id in PUBLISHED:
        params, stored = PUBLISHED[base_id]
        disk = params * BYTES[stored]
        lines.append(f"disk: downloading {base_id} writes about {human(disk)} ({stored}) to the hub cache")
    memory = params * BYTES.get(dtype, 4) if params else None
    lines.insert(0, f"memory: at least {human(memory)} for the base's {params / 1e9:.2f} B parameters in {dtype} "
                    "(activations and a dense merge's deltas come on top)" if memory else
                 "memory: unknown (the base is not local and its size is not known)")
    return {"params": params, "memory_bytes": memory, "disk_bytes": disk, "lines": lines}
