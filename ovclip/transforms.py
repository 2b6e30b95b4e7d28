"""Augmentation pipelines from config: a list of torchvision.transforms.v2 transforms by name (and this
module's own, `TRANSFORMS`); a step's `transforms` (for v2's RandomApply, RandomChoice, Compose ...) is a list
of steps built the same way."""
from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .errors import UserInputError


class PipelineError(UserInputError, ValueError):
    """A pipeline entry names no torchvision.transforms.v2 transform or has bad arguments."""


class RandomSizeCrop(v2.Transform):
    """DETR's RandomSizeCrop (facebookresearch/detr datasets/transforms.py, used by Deformable DETR and
    OV-DETR): a crop of a random width in [min_size, min(image width, max_size)] and a random height in
    [min_size, min(image height, max_size)] (each uniform over the integers, the whole side when the image is
    smaller than `min_size`) at a random place; boxes shifted and clipped with it (the detection dataset then
    drops those under a pixel wide or high, and with `filter_empty` serves the next image when none is left).
    Not for a feature store's distillation boxes: the crop cuts the boxes, not what their embeddings saw."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomSizeCrop needs 0 < min_size <= max_size, got {min_size} and {max_size}")
        self.min_size, self.max_size = int(min_size), int(max_size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        images = [x for x in flat_inputs if isinstance(x, tv_tensors.Image)]
        if not images:
            raise TypeError("RandomSizeCrop needs a torchvision.tv_tensors.Image among its inputs")
        height, width = images[0].shape[-2:]

        def draw(low: int, high: int) -> int:
            return int(torch.randint(low, high + 1, ()))
        w = draw(min(self.min_size, width), min(width, self.max_size))
        h = draw(min(self.min_size, height), min(height, self.max_size))
        return {"top": draw(0, height - h), "left": draw(0, width - w), "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(v2.functional.crop, inpt, **params)

    # torchvision < 0.21 names the two hooks privately
    _get_params, _transform = make_params, transform


TRANSFORMS = {"RandomSizeCrop": RandomSizeCrop}


def _transform_names() -> list[str]:
    return [n for n in dir(v2) if n[:1].isupper() and isinstance(getattr(v2, n), type)
            and issubclass(getattr(v2, n), v2.Transform)] + list(TRANSFORMS)


def _build_step(step: Any, where: str) -> v2.Transform:
    if not isinstance(step, Mapping) or "type" not in step:
        raise PipelineError(f"{where} must be a dict with a 'type', got {step!r}")
    kwargs = dict(step)
    name = kwargs.pop("type")
    cls = (TRANSFORMS.get(name) or getattr(v2, name, None)) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, v2.Transform)):
        close = difflib.get_close_matches(str(name), _transform_names(), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise PipelineError(f"{where}: '{name}' is not a torchvision.transforms.v2 transform{hint}")
    if "transforms" in kwargs:  # RandomApply, RandomChoice, RandomOrder, Compose: steps of their own
        inner = kwargs["transforms"]
        if not isinstance(inner, Sequence) or isinstance(inner, (str, Mapping)):
            raise PipelineError(f"{where} ({name}): 'transforms' must be a list of steps, got {inner!r}")
        kwargs["transforms"] = [_build_step(s, f"{where}.transforms[{j}]") for j, s in enumerate(inner)]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise PipelineError(f"{where} ({name}): {e}") from None


def build_pipeline(steps: "Sequence[Mapping[str, Any]] | None") -> "v2.Compose | None":
    """[{type: 'RandomHorizontalFlip', p: 0.5}, ...] -> v2.Compose (None for an empty pipeline).

    Transforms see the image and its targets (boxes, masks, label maps, distillation boxes) together,
    so geometric augmentation keeps them in step.
    """
    if not steps:
        return None
    return v2.Compose([_build_step(step, f"pipeline[{i}]") for i, step in enumerate(steps)])
