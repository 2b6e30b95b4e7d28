"""What the detection and segmentation demos and their Python APIs share: the refusal of a trainable model
built without its checkpoint, pictures drawn at a readable size with a legend panel beside them, and the
note that a toy teacher (the synthetic world's, a random one) knows nothing of real photos."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

from .options import ConfigError
from .teacher import RANDOM_TAG, packaged_model_configs

# Pictures with a shorter side are enlarged by a whole factor: a 128-pixel image's captions cannot be read.
MIN_SHORT_SIDE = 512
PALETTE = [(230, 25, 75), (60, 180, 75), (67, 99, 216), (245, 130, 49), (145, 30, 180), (66, 212, 244),
           (240, 50, 230), (191, 239, 69), (250, 190, 212), (70, 153, 144), (220, 190, 255), (154, 99, 36),
           (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 117)]
SYNTHETIC_TEACHER_CONFIG = "synthetic-rn"  # the packaged model config of the synthetic world's teacher


def colour(index: int) -> tuple[int, int, int]:
    """The drawing colour of vocabulary position `index`."""
    return PALETTE[index % len(PALETTE)]


def has_trainable_weights(model: torch.nn.Module) -> bool:
    """Whether any parameter of the model is trained (a zero-shot model such as MaskCLIP has none: its
    frozen teacher is all there is)."""
    return any(p.requires_grad for p in model.parameters())


def require_checkpoint(model: torch.nn.Module, config: Any) -> None:
    """Refuse a model built without a checkpoint when it has trainable weights: untrained, they give
    confident nonsense. Zero-shot models pass."""
    if has_trainable_weights(model):
        raise ConfigError(f"the model of {config} has trainable weights: give the checkpoint trained from this "
                          f"config (only zero-shot models such as MaskCLIP run with none; in Python, "
                          f"allow_untrained=True builds the model untrained on purpose)")


def readable(picture: Image.Image) -> tuple[Image.Image, int]:
    """The picture enlarged by the smallest whole factor that makes its short side at least MIN_SHORT_SIDE
    (nearest neighbour: the pixels the model saw, only bigger), and that factor (1: unchanged)."""
    scale = max(1, math.ceil(MIN_SHORT_SIDE / max(1, min(picture.size))))
    if scale == 1:
        return picture, 1
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST), scale


def font_for(picture: Image.Image) -> ImageFont.ImageFont:
    """Pillow's default font at a size that reads well on this picture (16 px at 512 px)."""
    return ImageFont.load_default(size=max(14, round(min(picture.size) / 32)))


def text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    """Width and height of `text` drawn at the origin (ink only, as PIL measures it)."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1 - y0


def draw_centred(draw: ImageDraw.ImageDraw, box: Sequence[float], text: str, font: ImageFont.ImageFont,
                 fill: Any) -> None:
    """Draw `text` centred in `box` (x0, y0, x1, y1); measured by its bounding box, so bitmap fonts work too."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    x = (box[0] + box[2] - (x1 - x0)) / 2 - x0
    y = (box[1] + box[3] - (y1 - y0)) / 2 - y0
    draw.text((x, y), text, fill=fill, font=font)


def ink_for(background: tuple[int, int, int]) -> str:
    """Black or white, whichever reads better on `background`."""
    r, g, b = background
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


@dataclass
class LegendRow:
    """One line of a legend: a colour swatch (with `tag` written on it: the number of a box in the picture),
    then `text`; `dim` greys the text (a class that was not found)."""

    colour: tuple[int, int, int]
    text: str
    tag: str = ""
    dim: bool = False


def with_legend(picture: Image.Image, rows: Sequence[LegendRow], title: str,
                font: Optional[ImageFont.ImageFont] = None) -> Image.Image:
    """The picture with a white panel on its right: `title`, then one line per row. The canvas grows
    downwards when the rows are taller than the picture."""
    font = font or font_for(picture)
    draw = ImageDraw.Draw(picture)
    height = max(text_size(draw, "Ag0", font)[1], 1)
    line, swatch, pad = round(height * 1.9), round(height * 1.5), round(height * 0.8)
    tag_width = max([text_size(draw, r.tag, font)[0] for r in rows if r.tag] or [0])
    swatch_width = max(swatch, tag_width + pad)
    text_width = max(text_size(draw, t, font)[0] for t in [title, *(r.text for r in rows)])
    panel = pad + swatch_width + pad + text_width + 2 * pad
    canvas = Image.new("RGB", (picture.width + panel, max(picture.height, 2 * pad + line * (len(rows) + 1))),
                       "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = picture.width + pad
    draw_centred(draw, (x, pad, x + text_size(draw, title, font)[0], pad + line), title, font, "black")
    for i, row in enumerate(rows):
        top = pad + line * (i + 1)
        cell = (x, top + (line - swatch) // 2, x + swatch_width, top + (line + swatch) // 2)
        draw.rectangle(cell, fill=row.colour, outline="black" if row.colour == (255, 255, 255) else None)
        if row.tag:
            draw_centred(draw, cell, row.tag, font, ink_for(row.colour))
        text_x = x + swatch_width + pad
        w = text_size(draw, row.text, font)[0]
        draw_centred(draw, (text_x, top, text_x + w, top + line), row.text, font, "gray" if row.dim else "black")
    return canvas


def toy_teacher(spec: Any) -> Optional[str]:
    """'synthetic' for the synthetic shapes world's tiny CLIP (a teacher of that model config with trained
    weights), 'random' for a teacher with random weights (the packaged tiny test models), None for any other
    teacher (a pretrained CLIP tag, a checkpoint, a folder)."""
    if isinstance(spec, str):
        if spec.endswith(".json") or spec in packaged_model_configs():
            spec = {"config": spec}
        else:
            return "random" if spec.endswith("/" + RANDOM_TAG) else None
    if not isinstance(spec, dict) or spec.get("local_dir") or str(spec.get("arch", "")).startswith("hf-hub:"):
        return None
    if spec.get("pretrained") in (None, RANDOM_TAG):
        return "random"
    config = spec.get("config")
    if config and _model_config(config) == _model_config(SYNTHETIC_TEACHER_CONFIG):
        return "synthetic"
    return None


def _model_config(config: str) -> Optional[dict]:
    """A teacher's JSON model config without its preprocessing part (packaged name or file), or None."""
    try:
        if config in packaged_model_configs():
            text = resources.files("ovclip.model_configs").joinpath(config + ".json").read_text()
        else:
            text = Path(config).read_text()
        cfg = json.loads(text)
    except (OSError, ValueError):
        return None
    return {k: v for k, v in cfg.items() if k != "preprocess_cfg"} if isinstance(cfg, dict) else None


def teacher_note(spec: Any, zero_shot: bool, real_config: str) -> Optional[str]:
    """For a toy teacher (`toy_teacher`), a note that real photos give meaningless results and how to run
    with a real CLIP: a tag is enough for a zero-shot model; a trained one needs a config and checkpoint
    trained with a real teacher (`real_config` names such a config). None for a real teacher."""
    kind = toy_teacher(spec)
    if kind is None:
        return None
    what = ("the synthetic shapes world's tiny CLIP: it knows only that world's 12 shapes on textured "
            "backgrounds" if kind == "synthetic" else "a CLIP with random weights (a test model): it knows nothing")
    if zero_shot:
        how = (f"this model is zero-shot, so a real CLIP tag is all it needs: add --cfg-options "
               f"model.teacher=ViT-B-16/openai (weights downloaded once), or run {real_config}")
    else:
        how = (f"a real CLIP tag alone is not enough: this model's weights were trained with this teacher; use a "
               f"config whose teacher is a real CLIP, such as {real_config}, with a checkpoint trained from it "
               f"(tools/train.py)")
    return f"note: the teacher is {what}, so on real photos the results mean nothing. For real images, {how}."
