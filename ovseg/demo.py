"""The segmentation demo behind tools/demo.py: a coloured overlay with a legend, a label PNG and a json per image."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image, ImageDraw

from ovclip.io import atomic_json_dump, atomic_write, for_each_image

from .api import Segmentation, Segmenter
from .evaluation import save_label_png


PALETTE = [(230, 25, 75), (60, 180, 75), (67, 99, 216), (245, 130, 49), (145, 30, 180), (66, 212, 244),
           (240, 50, 230), (191, 239, 69), (250, 190, 212), (70, 153, 144), (220, 190, 255), (154, 99, 36),
           (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 117)]


def colour(index: int) -> tuple[int, int, int]:
    """The overlay colour of vocabulary position `index`."""
    return PALETTE[index % len(PALETTE)]


def draw_segmentation(image: torch.Tensor, seg: Segmentation, alpha: float = 0.5) -> Image.Image:
    """The image with each pixel tinted by its class colour, and a legend of the whole vocabulary on the
    right (classes found are listed with their share of the image)."""
    base = image.permute(1, 2, 0).numpy().astype("float32")
    palette = torch.tensor([colour(i) for i in range(len(seg.names))], dtype=torch.float32)
    tint = palette[seg.labels].numpy()
    blended = Image.fromarray((base * (1 - alpha) + tint * alpha).clip(0, 255).astype("uint8"))
    areas = seg.areas()
    row = 14
    width = 8 + max(len(f"{n} {100 * areas.get(n, 0):.0f}%") for n in seg.names) * 7 + 20
    canvas = Image.new("RGB", (blended.width + width, max(blended.height, row * len(seg.names) + 8)), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(seg.names):
        x, y = blended.width + 6, 4 + i * row
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=colour(i))
        text = f"{name} {100 * areas[name]:.0f}%" if name in areas else name
        draw.text((x + 14, y), text, fill="black" if name in areas else "gray")
    return canvas


def run_segmentation_demo(config: str, checkpoint: Optional[str], images: Sequence[str], vocabulary: str,
                          out_dir: str, device: str = "cpu", cfg_options: Optional[dict] = None) -> list[str]:
    """Write `<stem>_seg.png` (overlay + legend), `<stem>_labels.png` (vocabulary positions) and `<stem>.json`
    (class shares) for every image into out_dir; returns the images that could not be read. `cfg_options`
    override config keys."""
    segmenter = Segmenter.from_config(config, checkpoint, device=device, cfg_options=cfg_options)
    vocab = segmenter.set_vocabulary(vocabulary)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def handle(path: str, image: torch.Tensor) -> str:
        seg = segmenter.predict(image)
        stem = Path(path).stem
        drawn = draw_segmentation(image, seg)
        atomic_write(out / f"{stem}_seg.png", lambda tmp: drawn.save(tmp, format="PNG"))
        save_label_png(seg.labels, out / f"{stem}_labels.png")
        areas = seg.areas()
        atomic_json_dump({"image": path, "vocabulary": vocab.names,
                          "areas": {k: round(v, 4) for k, v in areas.items()}}, out / f"{stem}.json", indent=1)
        found = ", ".join(f"{k} {100 * v:.0f}%" for k, v in areas.items())
        return f"{path}: {found} -> {out / (stem + '_seg.png')}"
    return for_each_image(list(images), handle, out)
