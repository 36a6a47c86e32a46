"""Where dtypes and devices are decided: one place for the whole package.

Merging maths runs in ``COMPUTE_DTYPE`` (float32); SVDs, QRs and small cores run in ``SVD_DTYPE``
(float64), where rounding matters most. Results are cast to the model's dtype only when written.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

COMPUTE_DTYPE = torch.float32
SVD_DTYPE = torch.float64

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(DTYPES)}") from None


def parse_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; expected 'cpu' or 'cuda[:N]'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA device")
    return torch.device(name)


@dataclass(frozen=True)
class Numerics:
    """Device for the merge maths and dtype for the stored result."""

    device: torch.device = torch.device("cpu")
    out_dtype: torch.dtype = torch.float32

    @classmethod
    def from_names(cls, device: str = "cpu", dtype: str = "float32") -> "Numerics":
        return cls(parse_device(device), parse_dtype(dtype))
