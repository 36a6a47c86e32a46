"""Elementwise building blocks shared by TIES-style methods (ties, dare-ties, knots, drm)."""
from __future__ import annotations

import torch
from torch import Tensor


def elect_sign(stacked: Tensor) -> Tensor:
    """Per-entry sign of the sum over tasks (dim 0): +1, −1 or 0."""
    return torch.sign(stacked.sum(dim=0))


def disjoint_mean(stacked: Tensor, sign: Tensor) -> Tensor:
    """Per entry, the mean of the non-zero task entries whose sign equals ``sign``; 0 where none."""
    agree = (torch.sign(stacked) == sign) & (stacked != 0)
    total = torch.where(agree, stacked, torch.zeros_like(stacked)).sum(dim=0)
    count = agree.sum(dim=0)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
