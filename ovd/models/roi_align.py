"""torchvision's RoIAlign on CPU, faster, with the same numbers bit for bit.

torchvision's CPU RoIAlign kernels run on one thread, and its backward recomputes every sample point's
bilinear weights for each channel and adds one channel at a time. Here:
- the backward (`roi_align_backward`) computes the weights once per sample point and adds all channels at
  once (torch ops over the channels; `index_add_`, which adds the rows of one index in the order given). Each
  input gradient element receives the same terms, each computed by the same float operations as in the C++
  kernel, in the same order (box, bin, sample, corner), so the gradient is torchvision's bit for bit. That
  order is ATen's CPU `index_add_` (through `scatter_add_`: a stable radix sort of the indices from 16 columns
  on, a serial loop below), which PyTorch does not document: the tests check it on the installed torch, on both
  paths. It holds channels-last copies of the output gradient and of the result (torchvision's kernel: neither);
- with 2+ intra-op threads the forward runs torchvision's own kernel on blocks of channels, one block a
  thread (every output channel depends on its input channel alone).
tests/test_roi_align.py compares outputs and gradients with torchvision's to the bit. On GPUs, when traced or
scripted, under autocast, for dtypes other than float32 / float64, or without torchvision's private pooler
helpers, the stock torchvision path runs. `python benchmarks/roi_align.py` times both.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torchvision.ops import MultiScaleRoIAlign

try:  # torchvision's own helpers of MultiScaleRoIAlign.forward (private: without them, the stock forward runs)
    from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales
except ImportError:  # pragma: no cover - a torchvision that renamed them
    _convert_to_roi_format = _filter_input = _setup_scales = None

__all__ = ["FastMultiScaleRoIAlign", "fast_roi_align", "roi_align_backward"]

_POOL: Optional[tuple[int, ThreadPoolExecutor]] = None  # (the process that made it, the pool)
_POOL_LOCK = threading.Lock()


def _channel_blocks(channels: int) -> list[slice]:
    """One block of channels per intra-op thread (torch.get_num_threads())."""
    n = max(1, min(torch.get_num_threads(), channels))
    bounds = [channels * i // n for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _map(fn, blocks: list[slice]) -> list[Tensor]:
    """fn over the channel blocks: the first in the calling thread, the others on a shared thread pool (torch's
    kernels release the GIL)."""
    global _POOL
    if len(blocks) == 1:
        return [fn(blocks[0])]
    with _POOL_LOCK:  # a forked child has the pool object without its threads: it makes its own
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < len(blocks) - 1:
            if _POOL is not None and _POOL[0] == os.getpid():
                _POOL[1].shutdown(wait=False)  # more threads were asked for (torch.set_num_threads)
            _POOL = (os.getpid(), ThreadPoolExecutor(len(blocks) - 1, thread_name_prefix="ovd-roi-align"))
        # submitted under the lock: no shutdown in between
        others = [_POOL[1].submit(_without_grad, fn, b) for b in blocks[1:]]
    first = fn(blocks[0])
    return [first] + [f.result() for f in others]


def _without_grad(fn, block: slice) -> Tensor:
    """fn(block) in a pool thread, whose grad mode is its own (the caller's autograd.Function runs without)."""
    with torch.no_grad():
        return fn(block)


# Sample points whose gradient terms are made at once: the index arrays of a batch of points (whole boxes or
# parts of one), and the (points, 4 corners, channels) terms of a few of them at a time (in the CPU's cache)
_POINTS_PER_BATCH, _POINTS_PER_STEP = 1 << 14, 1024


def _sample_points(rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int, sampling_ratio: int,
                   aligned: bool) -> tuple[Tensor, ...]:
    """Per box, as the C++ kernel computes them in the boxes' dtype: the start (y, x), bin sizes (h, w) and
    sample grid (h, w)."""
    dt = rois.dtype
    offset = torch.tensor(0.5 if aligned else 0.0, dtype=dt)
    scale = torch.tensor(spatial_scale, dtype=dt)
    start_w, start_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    roi_w, roi_h = (rois[:, 3] * scale - offset) - start_w, (rois[:, 4] * scale - offset) - start_h
    if not aligned:  # malformed boxes made 1 x 1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / pooled_height, roi_w / pooled_width
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full(roi_h.shape, sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = torch.ceil(roi_h / pooled_height).long(), torch.ceil(roi_w / pooled_width).long()
    # an aligned box of negative size has a negative grid: the kernel's loops over it do not run
    return start_h, start_w, bin_h, bin_w, grid_h.clamp(min=0), grid_w.clamp(min=0)


def _corners(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One axis of bilinear_interpolate_gradient: the low / high pixel and the weights of each (clamped at the
    border as the C++ kernel clamps)."""
    coord = coord.clamp(min=0)
    low = coord.long()
    top = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(top, low, low + 1)
    frac = torch.where(top, low.to(coord.dtype), coord) - low.to(coord.dtype)
    return low, high, 1 - frac, frac


def _torchvision_backward(grad: Tensor, rois: Tensor, *args) -> Tensor:
    return torch.ops.torchvision._roi_align_backward(grad, rois, *args)


def roi_align_backward(grad: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
                       batch: int, channels: int, height: int, width: int, sampling_ratio: int,
                       aligned: bool) -> Tensor:
    """The input gradient of RoIAlign: `torch.ops.torchvision._roi_align_backward`'s arguments and result bit for
    bit, the sample points' weights computed once for all channels. Other devices and dtypes, boxes and gradient
    of different dtypes, no channels, and boxes whose coordinates are not finite go to torchvision's kernel; a
    box's batch index out of range is an IndexError (torchvision's kernel writes outside its result)."""
    args = (spatial_scale, pooled_height, pooled_width, batch, channels, height, width, sampling_ratio, aligned)
    if not (grad.is_cpu and grad.dtype in (torch.float32, torch.float64) and rois.dtype == grad.dtype and channels):
        return _torchvision_backward(grad, rois, *args)
    rois, dt, bins = rois.contiguous(), grad.dtype, pooled_height * pooled_width
    start_h, start_w, bin_h, bin_w, grid_h, grid_w = _sample_points(rois, spatial_scale, pooled_height,
                                                                    pooled_width, sampling_ratio, aligned)
    if not bool(torch.isfinite(torch.stack([start_h, start_w, bin_h, bin_w])).all()):
        return _torchvision_backward(grad, rois, *args)  # its points at NaN add nothing
    samples = grid_h * grid_w
    count = samples.to(dt)
    points = samples * bins  # sample points of each box
    ends = torch.cumsum(points, 0)  # where each box's points end among all boxes' points
    starts = ends - points
    pixel0 = rois[:, 0].long() * (height * width)  # the box's image's first pixel in the flat gradient
    rows = grad.permute(0, 2, 3, 1).reshape(-1, channels)  # (box, bin) -> the output gradient of its channels
    out = grad.new_zeros(batch * height * width, channels)  # the input gradient, channels last
    step_grad, step_terms = grad.new_empty(_POINTS_PER_STEP, channels), grad.new_empty(_POINTS_PER_STEP, 4, channels)
    total = int(ends[-1]) if len(ends) else 0
    for first in range(0, total, _POINTS_PER_BATCH):
        # sample points (box, bin y, bin x, sample y, sample x) in the C++ kernel's order, a batch at a time
        point = torch.arange(first, min(first + _POINTS_PER_BATCH, total))
        box = torch.searchsorted(ends, point, right=True)
        local = point - starts[box]
        per_bin, box_grid_h, box_grid_w = samples[box], grid_h[box], grid_w[box]
        bin_index = local // per_bin
        sample = local - bin_index * per_bin
        ph, pw = bin_index // pooled_width, bin_index % pooled_width
        iy, ix = sample // box_grid_w, sample % box_grid_w
        y = start_h[box] + ph.to(dt) * bin_h[box] + (iy.to(dt) + 0.5) * bin_h[box] / box_grid_h.to(dt)
        x = start_w[box] + pw.to(dt) * bin_w[box] + (ix.to(dt) + 0.5) * bin_w[box] / box_grid_w.to(dt)
        source = box * bins + bin_index
        outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
        if bool(outside.any()):  # points off the map add nothing
            inside = ~outside
            box, source, y, x = box[inside], source[inside], y[inside], x[inside]
        y_low, y_high, hy, ly = _corners(y, height)
        x_low, x_high, hx, lx = _corners(x, width)
        weights = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], 1)
        row_low, row_high = pixel0[box] + y_low * width, pixel0[box] + y_high * width
        target = torch.stack([row_low + x_low, row_low + x_high, row_high + x_low, row_high + x_high], 1).view(-1)
        divisor = count[box][:, None, None]
        for a in range(0, len(box), _POINTS_PER_STEP):  # grad * w / count, added corner by corner
            b = min(a + _POINTS_PER_STEP, len(box))
            g, terms = step_grad[:b - a], step_terms[:b - a]
            torch.index_select(rows, 0, source[a:b], out=g)
            torch.mul(g[:, None, :], weights[a:b, :, None], out=terms)
            terms.div_(divisor[a:b])
            out.index_add_(0, target[4 * a:4 * b], terms.view(-1, channels))
    return out.view(batch, height, width, channels).permute(0, 3, 1, 2).contiguous()


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
                sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.args = (input.shape, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
        parts = _map(lambda s: torch.ops.torchvision.roi_align(input[:, s], rois, spatial_scale, pooled_height,
                                                               pooled_width, sampling_ratio, aligned),
                     _channel_blocks(input.shape[1]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

    @staticmethod
    @once_differentiable  # as torchvision's: a gradient of the gradient is not computed (create_graph still works)
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        (batch, channels, height, width), spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
        return (roi_align_backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch, channels, height,
                                   width, sampling_ratio, aligned), None, None, None, None, None, None)


def fast_roi_align(input: Tensor, rois: Tensor, output_size: "int | tuple[int, int]", spatial_scale: float,
                   sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """`torchvision.ops.roi_align` for (K, 5) `rois` on a CPU tensor: the same outputs and gradients, its
    forward split across threads by channel, its backward `roi_align_backward`."""
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _RoIAlign.apply(input, rois, spatial_scale, h, w, sampling_ratio, aligned)


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


class FastMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign (same arguments, state, outputs and gradients) whose RoIAlign is
    `fast_roi_align` on CPU."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if _setup_scales is None or torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x, boxes, image_shapes)
        x_filtered = _filter_input(x, self.featmap_names)
        # autocast is per thread (pool threads would not see it) and the kernels are float32 / float64 only
        if _autocast_on_cpu() or \
                any(f.device.type != "cpu" or f.dtype not in (torch.float32, torch.float64) for f in x_filtered):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(x_filtered, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(x_filtered) == 1:
            return fast_roi_align(x_filtered[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        first = x_filtered[0]
        result = first.new_zeros((len(rois), first.shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(x_filtered, self.scales)):
            idx = torch.where(levels == level)[0]
            result[idx] = fast_roi_align(feature, rois[idx], self.output_size, scale,
                                         self.sampling_ratio).to(result.dtype)
        return result
