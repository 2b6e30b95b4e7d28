"""The segmentation demo behind tools/demo.py: a coloured overlay with a legend, a label PNG and a json per image."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image

from ovclip.demo import LegendRow, colour, has_trainable_weights, readable, teacher_note, with_legend
from ovclip.engine import load_config
from ovclip.io import atomic_json_dump, atomic_write, for_each_image

from .api import Segmentation, Segmenter
from .evaluation import save_label_png


# Configs whose teacher is a real CLIP, named by the note printed for a toy teacher.
REAL_TEACHER_CONFIGS = {"zero-shot": "configs/maskclip/maskclip_vit-b-16_ade20k-150.py",
                        "trained": "configs/maskclip_plus/maskclip-plus_r101-d8_ade20k-150.py"}


def draw_segmentation(image: torch.Tensor, seg: Segmentation, alpha: float = 0.5) -> Image.Image:
    """The image with each pixel tinted by its class colour, at a readable size (`ovclip.demo.readable`),
    and a legend of the whole vocabulary on the right (classes found are listed with their share of the
    image, the others greyed)."""
    base = image.permute(1, 2, 0).numpy().astype("float32")
    palette = torch.tensor([colour(i) for i in range(len(seg.names))], dtype=torch.float32)
    tint = palette[torch.as_tensor(seg.labels)].numpy()
    blended = Image.fromarray((base * (1 - alpha) + tint * alpha).clip(0, 255).astype("uint8"))
    picture, _ = readable(blended)
    areas = seg.areas()
    rows = [LegendRow(colour(i), f"{name} {100 * areas[name]:.0f}%" if name in areas else name, dim=name not in areas)
            for i, name in enumerate(seg.names)]
    return with_legend(picture, rows, "share of the image")


def run_segmentation_demo(config: str, checkpoint: Optional[str], images: Sequence[str], vocabulary: str,
                          out_dir: str, device: str = "cpu", cfg_options: Optional[dict] = None) -> list[str]:
    """Write `<name>_seg.png` (overlay + legend, readable size), `<name>_labels.png` (vocabulary positions, the
    image's own size) and `<name>.json` (source path, class shares) for every image into out_dir, `<name>` being
    the image's stem made distinct (`ovclip.io.output_names`); folders stand for the images in them. Returns
    the inputs that could not be read. `cfg_options` override config keys."""
    segmenter = Segmenter.from_config(config, checkpoint, device=device, cfg_options=cfg_options)
    zero_shot = not has_trainable_weights(segmenter.model)
    note = teacher_note(load_config(config, cfg_options).model.get("teacher"), zero_shot,
                        REAL_TEACHER_CONFIGS["zero-shot" if zero_shot else "trained"])
    if note:
        print(note)
    return segmentation_demo(segmenter, images, vocabulary, out_dir)


def segmentation_demo(segmenter: Any, images: Sequence[str], vocabulary: str, out_dir: str) -> list[str]:
    """`run_segmentation_demo`'s files from any segmenter with `set_vocabulary` and `predict(image)` giving a
    Segmentation: an `ovseg.Segmenter`, or an exported one (`ovclip.deploy.OnnxSegmenter`)."""
    vocab = segmenter.set_vocabulary(vocabulary)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def handle(path: str, image: torch.Tensor, name: str) -> str:
        seg = segmenter.predict(image.permute(1, 2, 0).numpy())  # an HxWx3 array: both APIs take it
        drawn = draw_segmentation(image, seg)
        atomic_write(out / f"{name}_seg.png", lambda tmp: drawn.save(tmp, format="PNG"))
        save_label_png(torch.as_tensor(seg.labels), out / f"{name}_labels.png")
        areas = seg.areas()
        atomic_json_dump({"image": path, "vocabulary": vocab.names,
                          "areas": {k: round(v, 4) for k, v in areas.items()}}, out / f"{name}.json", indent=1)
        found = ", ".join(f"{k} {100 * v:.0f}%" for k, v in areas.items())
        return f"{path}: {found} -> {out / (name + '_seg.png')}"
    return for_each_image(list(images), handle, out)
