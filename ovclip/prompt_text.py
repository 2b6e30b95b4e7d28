"""Prompt text: ViLD's templates and the formatting of a class name into prompts. Imports neither torch nor
open_clip, so that a deployed application (`ovclip.deploy`) formats prompts exactly as training did."""
from __future__ import annotations

from typing import Sequence

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
