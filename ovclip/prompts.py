"""Prompt templates and the per-class averaging of text embeddings over templates and synonyms."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

# CLIP's 80 ImageNet templates, as released with CLIP and shipped by open_clip.
IMAGENET_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)

# MaskCLIP adds five scene templates to CLIP's 80.
MASKCLIP_TEMPLATES: tuple[str, ...] = IMAGENET_TEMPLATES + (
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
)

# ViLD's 63 templates; "{article}" becomes "a" or "an". ViLD also prefixes "This is " to
# every prompt that starts with "a" or "the" (its `this_is` flag), applied in `format_prompts`.
VILD_TEMPLATES: tuple[str, ...] = (
    "There is {article} {} in the scene.", "There is the {} in the scene.",
    "a photo of {article} {} in the scene.", "a photo of the {} in the scene.",
    "a photo of one {} in the scene.", "itap of {article} {}.", "itap of my {}.", "itap of the {}.",
    "a photo of {article} {}.", "a photo of my {}.", "a photo of the {}.", "a photo of one {}.",
    "a photo of many {}.", "a good photo of {article} {}.", "a good photo of the {}.",
    "a bad photo of {article} {}.", "a bad photo of the {}.", "a photo of a nice {}.",
    "a photo of the nice {}.", "a photo of a cool {}.", "a photo of the cool {}.",
    "a photo of a weird {}.", "a photo of the weird {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of a clean {}.", "a photo of the clean {}.", "a photo of a dirty {}.",
    "a photo of the dirty {}.", "a bright photo of {article} {}.", "a bright photo of the {}.",
    "a dark photo of {article} {}.", "a dark photo of the {}.", "a photo of a hard to see {}.",
    "a photo of the hard to see {}.", "a low resolution photo of {article} {}.",
    "a low resolution photo of the {}.", "a cropped photo of {article} {}.",
    "a cropped photo of the {}.", "a close-up photo of {article} {}.", "a close-up photo of the {}.",
    "a jpeg corrupted photo of {article} {}.", "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.", "a blurry photo of the {}.",
    "a pixelated photo of {article} {}.", "a pixelated photo of the {}.",
    "a black and white photo of the {}.", "a black and white photo of {article} {}.",
    "a plastic {}.", "the plastic {}.", "a toy {}.", "the toy {}.", "a plushie {}.",
    "the plushie {}.", "a cartoon {}.", "the cartoon {}.", "an embroidered {}.",
    "the embroidered {}.", "a painting of the {}.", "a painting of a {}.",
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


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def format_prompts(templates: Sequence[str], name: str) -> list[str]:
    """All prompts for one class name (ViLD's article and 'This is' rules for ViLD templates)."""
    vild = tuple(templates) == VILD_TEMPLATES
    prompts = []
    for t in templates:
        p = t.replace("{article}", _article(name)).format(name)
        if vild and (p.startswith("a ") or p.startswith("an ") or p.startswith("the ")):
            p = "This is " + p
        prompts.append(p)
    return prompts


def average_embeddings(embeddings: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Normalise each row, average consecutive groups of rows of the given sizes, renormalise."""
    if sum(groups) != embeddings.shape[0]:
        raise ValueError(f"group sizes add up to {sum(groups)} but there are {embeddings.shape[0]} rows")
    e = F.normalize(embeddings.float(), dim=-1)
    means = torch.stack([chunk.mean(0) for chunk in torch.split(e, list(groups))])
    return F.normalize(means, dim=-1)
