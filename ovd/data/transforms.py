"""Box helpers for detection pipelines (the pipeline builder itself is `ovclip.transforms`)."""
from __future__ import annotations

import torch


def drop_degenerate(boxes: torch.Tensor, min_size: float = 1.0) -> torch.Tensor:
    """Mask of xyxy boxes that are finite and at least `min_size` pixels wide and high."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    finite = torch.isfinite(boxes).all(dim=1)
    return finite & (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
