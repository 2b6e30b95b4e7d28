"""Augmentation pipelines from config: a list of torchvision.transforms.v2 transforms by name."""
from __future__ import annotations

import difflib
from typing import Any, Mapping, Sequence

from torchvision.transforms import v2

from .errors import UserInputError


class PipelineError(UserInputError, ValueError):
    """A pipeline entry names no torchvision.transforms.v2 transform or has bad arguments."""


def _transform_names() -> list[str]:
    return [n for n in dir(v2) if n[:1].isupper() and isinstance(getattr(v2, n), type)
            and issubclass(getattr(v2, n), v2.Transform)]


def build_pipeline(steps: "Sequence[Mapping[str, Any]] | None") -> "v2.Compose | None":
    """[{type: 'RandomHorizontalFlip', p: 0.5}, ...] -> v2.Compose (None for an empty pipeline).

    Transforms see the image and its targets (boxes, masks, label maps, distillation boxes) together,
    so geometric augmentation keeps them in step.
    """
    if not steps:
        return None
    built = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping) or "type" not in step:
            raise PipelineError(f"pipeline[{i}] must be a dict with a 'type', got {step!r}")
        kwargs = dict(step)
        name = kwargs.pop("type")
        cls = getattr(v2, name, None) if isinstance(name, str) else None
        if not (isinstance(cls, type) and issubclass(cls, v2.Transform)):
            close = difflib.get_close_matches(str(name), _transform_names(), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise PipelineError(f"pipeline[{i}]: '{name}' is not a torchvision.transforms.v2 transform{hint}")
        try:
            built.append(cls(**kwargs))
        except TypeError as e:
            raise PipelineError(f"pipeline[{i}] ({name}): {e}") from None
    return v2.Compose(built)

