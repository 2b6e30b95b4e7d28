"""RoIAlign on CPU split across threads by channel: torchvision's own kernels, the same numbers bit for bit.

torchvision's CPU RoIAlign forward and backward kernels run on one thread, the other cores idle. Every channel
of RoIAlign's output and of its input gradient depends on that channel alone, so each thread runs
torchvision's kernel on a block of channels and the blocks are concatenated: no sum changes order, and the
outputs and gradients equal torchvision's exactly (tests/test_roi_align.py). On 2 cores, the shipped
synthetic ViLD config: the box RoIAlign's forward + backward 1.39x faster, a training step 1.20x
(benchmarks/roi_align.py). On GPUs, when traced or scripted, on one thread, under autocast, for other dtypes
than float32 / float64, or without torchvision's private pooler helpers, the stock torchvision path runs.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign

try:  # torchvision's own helpers of MultiScaleRoIAlign.forward (private: without them, the stock forward runs)
    from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales
except ImportError:  # pragma: no cover - a torchvision that renamed them
    _convert_to_roi_format = _filter_input = _setup_scales = None

__all__ = ["ChannelParallelMultiScaleRoIAlign", "roi_align_by_channels"]

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


class _RoIAlignByChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, spatial_scale: float, pooled_height: int, pooled_width: int,
                sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.args = (input.shape, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
        parts = _map(lambda s: torch.ops.torchvision.roi_align(input[:, s], rois, spatial_scale, pooled_height,
                                                               pooled_width, sampling_ratio, aligned),
                     _channel_blocks(input.shape[1]))
        return torch.cat(parts, 1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        (batch, channels, height, width), spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
        parts = _map(lambda s: torch.ops.torchvision._roi_align_backward(
            grad[:, s], rois, spatial_scale, pooled_height, pooled_width, batch, s.stop - s.start, height, width,
            sampling_ratio, aligned), _channel_blocks(channels))
        return torch.cat(parts, 1), None, None, None, None, None, None


def roi_align_by_channels(input: Tensor, rois: Tensor, output_size: "int | tuple[int, int]", spatial_scale: float,
                          sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """`torchvision.ops.roi_align` for (K, 5) `rois` on a CPU tensor, its forward and backward split across
    threads by channel; the same outputs and gradients."""
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _RoIAlignByChannels.apply(input, rois, spatial_scale, h, w, sampling_ratio, aligned)


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


class ChannelParallelMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign (same arguments, state and outputs) whose RoIAlign runs split across
    threads by channel on CPU (`roi_align_by_channels`)."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if _setup_scales is None or torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x, boxes, image_shapes)
        x_filtered = _filter_input(x, self.featmap_names)
        # autocast is per thread (pool threads would not see it) and the kernels are float32 / float64 only
        if torch.get_num_threads() < 2 or _autocast_on_cpu() or \
                any(f.device.type != "cpu" or f.dtype not in (torch.float32, torch.float64) for f in x_filtered):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(x_filtered, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(x_filtered) == 1:
            return roi_align_by_channels(x_filtered[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        first = x_filtered[0]
        result = first.new_zeros((len(rois), first.shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(x_filtered, self.scales)):
            idx = torch.where(levels == level)[0]
            result[idx] = roi_align_by_channels(feature, rois[idx], self.output_size, scale,
                                                self.sampling_ratio).to(result.dtype)
        return result
