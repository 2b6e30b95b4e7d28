"""Prompt templates and the per-class averaging of text embeddings over templates and synonyms."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from .prompt_text import VILD_TEMPLATES, format_prompts

__all__ = ["IMAGENET_TEMPLATES", "MASKCLIP_TEMPLATES", "SINGLE_TEMPLATE", "TEMPLATE_SETS", "VILD_TEMPLATES",
           "average_embeddings", "format_prompts", "get_templates"]

# CLIP's 80 ImageNet templates, as released with CLIP and shipped by open_clip.
IMAGENET_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)

# MaskCLIP adds five scene templates to CLIP's 80.
MASKCLIP_TEMPLATES: tuple[str, ...] = IMAGENET_TEMPLATES + (
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
)

SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}.",)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "vild": VILD_TEMPLATES,
    "maskclip": MASKCLIP_TEMPLATES,
    "single": SINGLE_TEMPLATE,
}


def get_templates(spec: "str | Sequence[str]") -> tuple[str, ...]:
    """A named template set ('imagenet', 'vild', 'maskclip', 'single') or a list of '{}' templates."""
    if isinstance(spec, str):
        if spec in TEMPLATE_SETS:
            return TEMPLATE_SETS[spec]
        if "{}" in spec:
            return (spec,)
        raise ValueError(f"unknown template set '{spec}'; use one of {sorted(TEMPLATE_SETS)} "
                         "or a list of templates containing '{}'")
    templates = tuple(spec)
    if not templates:
        raise ValueError("the template list is empty; give at least one template such as 'a photo of a {}.'")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"templates must contain '{{}}' where the class name goes: {bad}")
    return templates


def average_embeddings(embeddings: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Normalise each row, average consecutive groups of rows of the given sizes, renormalise."""
    if sum(groups) != embeddings.shape[0]:
        raise ValueError(f"group sizes add up to {sum(groups)} but there are {embeddings.shape[0]} rows")
    e = F.normalize(embeddings.float(), dim=-1)
    means = torch.stack([chunk.mean(0) for chunk in torch.split(e, list(groups))])
    return F.normalize(means, dim=-1)
