"""Bilinear resizing that exports to ONNX with the image size free.

Eagerly `resize_bilinear` is `F.interpolate(mode="bilinear", align_corners=False)` (with or without
antialiasing). While torch traces a model for export it is the same resampling written as two matrix
products, (out_H, H) @ image @ (W, out_W): torch's ONNX exporter has no antialiased resize, and ONNX's
own antialiased Resize weighs pixels differently from torch (up to 0.04 apart on [0, 1] images). The
weights are torch's (`aten/src/ATen/native/cpu/UpSampleKernel.cpp`, `_compute_weights_aa`): output pixel
i has centre c = s (i + 0.5) with s = in / out; input pixel j gets max(0, 1 - |j + 0.5 - c| / s') with
s' = s when antialiasing a reduction (s >= 1), 1 otherwise (plain bilinear: the two nearest pixels, the
border clamped), normalised over the pixels in reach.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

Size = Union[int, torch.Tensor]


def tracing() -> bool:
    """Whether torch is tracing (exporting) right now."""
    return torch.jit.is_tracing()


def bilinear_weights(in_size: Size, out_size: Size, antialias: "bool | torch.Tensor") -> torch.Tensor:
    """(out, in) float32 resampling matrix of one axis, in torch's own float32 arithmetic (sizes may be
    traced 0-d tensors; `antialias` a bool or a traced bool tensor)."""
    n_in, n_out = (torch.as_tensor(v).to(torch.float32) for v in (in_size, out_size))
    scale = n_in / n_out
    i = torch.arange(torch.as_tensor(out_size), dtype=torch.float32)[:, None] + 0.5
    j = torch.arange(torch.as_tensor(in_size), dtype=torch.float32)[None]
    if isinstance(antialias, bool):
        return _antialiased(scale, i, j, n_in) if antialias else _linear(scale, i, j, n_in)
    return torch.where(antialias, _antialiased(scale, i, j, n_in), _linear(scale, i, j, n_in))


def _antialiased(scale: torch.Tensor, i: torch.Tensor, j: torch.Tensor, n_in: torch.Tensor) -> torch.Tensor:
    # _compute_weights_aa: centre s (i + 0.5), reach [trunc(c - support + 0.5), trunc(c + support + 0.5)),
    # weight 1 - |(j - c + 0.5) / s'|, normalised over the reach
    wide = scale >= 1
    support = torch.where(wide, scale, torch.ones_like(scale))
    inv = torch.where(wide, (1 / scale.double()).float(), torch.ones_like(scale))
    centre = scale * i
    lo = torch.floor((centre - support).double() + 0.5).clamp_min(0)  # = trunc once clamped at 0
    hi = torch.minimum(torch.floor((centre + support).double() + 0.5), n_in.double())  # positive: = trunc
    w = (1 - ((j - centre + 0.5) * inv).abs()).clamp_min(0) * ((j >= lo) & (j < hi))
    return w / w.sum(1, keepdim=True).clamp_min(1e-30)


def _linear(scale: torch.Tensor, i: torch.Tensor, j: torch.Tensor, n_in: torch.Tensor) -> torch.Tensor:
    # upsample_bilinear2d: source s (i + 0.5) - 0.5 clamped at 0, its floor and the next pixel (the last
    # one repeated at the border), weighted 1 - lambda and lambda
    src = (scale * i - 0.5).clamp_min(0)
    first = torch.floor(src)
    lam = (src - first).clamp(0, 1)
    second = first + (first < n_in - 1).to(first.dtype)
    return (j == first) * (1 - lam) + (j == second) * lam


def resize_bilinear(x: torch.Tensor, size: "Sequence[Size] | torch.Tensor", antialias: bool = False) -> torch.Tensor:
    """(..., H, W) -> (..., size[0], size[1]), bilinear with half-pixel centres (align_corners=False)."""
    if not tracing():
        lead = x.shape[:-2]
        out = F.interpolate(x.reshape(1, -1, *x.shape[-2:]), size=(int(size[0]), int(size[1])), mode="bilinear",
                            align_corners=False, antialias=antialias)
        return out.reshape(*lead, *out.shape[-2:])
    rows = bilinear_weights(x.shape[-2], size[0], antialias).to(x.dtype)
    cols = bilinear_weights(x.shape[-1], size[1], antialias).to(x.dtype)
    return rows @ x @ cols.T


def short_side_of(image: torch.Tensor) -> Size:
    """The short side of a (..., H, W) image: an int, or a traced 0-d tensor while tracing."""
    if not tracing():
        return min(image.shape[-2:])
    return torch.minimum(torch.as_tensor(image.shape[-2]), torch.as_tensor(image.shape[-1]))


def traced_short_side_size(height: Size, width: Size, short_side: Size, multiple: int = 1) -> tuple[Size, Size]:
    """`ovclip.geometry.short_side_size`, on traced sizes while tracing (float64, rounding half to even as
    Python's round)."""
    from .geometry import short_side_size
    if not tracing():
        return short_side_size(int(height), int(width), float(short_side), multiple)
    h, w = (torch.as_tensor(v).to(torch.float64) for v in (height, width))
    scale = torch.as_tensor(short_side).to(torch.float64) / torch.minimum(h, w)
    return tuple((torch.round(v * scale / multiple) * multiple).clamp_min(multiple).long() for v in (h, w))
