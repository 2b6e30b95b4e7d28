"""The demo behind tools/demo.py: detections drawn on each image, plus a json per image."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from PIL import Image, ImageDraw
from torchvision.utils import draw_segmentation_masks

from ovclip.demo import (LegendRow, colour, draw_centred, font_for, has_trainable_weights, ink_for, readable,
                         teacher_note, text_size, with_legend)
from ovclip.engine import load_config
from ovclip.io import atomic_json_dump, atomic_write, for_each_image

from .api import Detections, Detector

# A config whose teacher is a real CLIP, named by the note printed for a toy teacher.
REAL_TEACHER_CONFIG = "configs/vild/vild_r50_fpn_1x_ov-coco.py"

Box = tuple[float, float, float, float]


def draw_detections(image: torch.Tensor, det: Detections, score_thr: Optional[float] = None) -> Image.Image:
    """The image at a readable size (`ovclip.demo.readable`) with each detection's box in its class colour
    and numbered, masks (if any) tinted, and a legend beside it keying the numbers to 'name score'.
    Captions never overlap: they are in the legend; the numbers are placed clear of each other."""
    colours = [colour(i) for i in det.labels.tolist()]
    if det.masks is not None and len(det):
        image = draw_segmentation_masks(image, torch.as_tensor(det.masks) > 0.5, alpha=0.4, colors=colours)
    picture, scale = readable(Image.fromarray(image.permute(1, 2, 0).numpy()))
    draw = ImageDraw.Draw(picture)
    font = font_for(picture)
    boxes = [tuple(v * scale for v in b) for b in det.boxes.tolist()]
    width = max(2, min(picture.size) // 170)
    for box, c in reversed(list(zip(boxes, colours))):  # the best detection's outline on top
        draw.rectangle(box, outline=c, width=width)
    tags = [str(i + 1) for i in range(len(det))]
    placed: list[Box] = []
    for box, c, tag in zip(boxes, colours, tags):
        w, h = text_size(draw, tag, font)
        cell = place_tag(box, (w + h, round(h * 1.8)), picture.size, placed)
        placed.append(cell)
        draw.rectangle(cell, fill=c)
        draw_centred(draw, cell, tag, font, ink_for(c))
    rows = [LegendRow(c, f"{n} {s:.2f}", tag) for c, n, s, tag in zip(colours, det.names, det.scores.tolist(), tags)]
    bar = "" if score_thr is None else f" scoring >= {score_thr:g}"
    title = f"{len(det)} found{bar}" if len(det) else f"nothing found{bar}"
    return with_legend(picture, rows, title, font)


def place_tag(box: Box, size: tuple[int, int], canvas: tuple[int, int], placed: Sequence[Box]) -> Box:
    """Where a box's number goes: the first place that overlaps no number already placed, kept inside the
    canvas: the top-left corner above the box, inside each corner, below it, then stepping along its top and
    bottom edges; if every place overlaps, the one that overlaps least."""
    (x0, y0, x1, y1), (w, h), (cw, ch) = box, size, canvas
    corners = [(x0, y0 - h), (x0, y0), (x1 - w, y0), (x0, y1 - h), (x1 - w, y1 - h), (x0, y1), (x1 - w, y0 - h)]
    steps = [(x0 + k * w, y) for y in (y0 - h, y0, y1 - h, y1) for k in range(1, max(1, int((x1 - x0) // w)))]
    best, best_overlap = None, None
    for x, y in corners + steps:
        x, y = min(max(0, x), cw - w), min(max(0, y), ch - h)
        cell = (x, y, x + w, y + h)
        overlap = sum(max(0, min(cell[2], p[2]) - max(cell[0], p[0])) * max(0, min(cell[3], p[3]) - max(cell[1], p[1]))
                      for p in placed)
        if overlap == 0:
            return cell
        if best_overlap is None or overlap < best_overlap:
            best, best_overlap = cell, overlap
    return best


def run_demo(config: str, checkpoint: Optional[str], images: Sequence[str], vocabulary: str, out_dir: str,
             score_thr: float = 0.3, device: str = "cpu", cfg_options: Optional[dict] = None) -> list[str]:
    """Write `<name>_det.png` (the readable picture) and `<name>.json` (the source path and the detections,
    boxes in the image's own pixels) for every image into out_dir, `<name>` being the image's stem made
    distinct (`ovclip.io.output_names`); folders stand for the images in them. Returns the inputs that could
    not be read (each is reported, the others still run). `cfg_options` override config keys."""
    detector = Detector.from_config(config, checkpoint, device=device, cfg_options=cfg_options)
    note = teacher_note(load_config(config, cfg_options).model.get("teacher"),
                        not has_trainable_weights(detector.model), REAL_TEACHER_CONFIG)
    if note:
        print(note)
    return detection_demo(detector, images, vocabulary, out_dir, score_thr)


def detection_demo(detector: Any, images: Sequence[str], vocabulary: str, out_dir: str, score_thr: float = 0.3) -> list[str]:
    """`run_demo`'s pictures and json files from any detector with `set_vocabulary` and `predict(image,
    score_thr=)` giving Detections: an `ovd.Detector`, or an exported one (`ovclip.deploy.OnnxDetector`)."""
    vocab = detector.set_vocabulary(vocabulary)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def handle(path: str, image: torch.Tensor, name: str) -> str:
        det = detector.predict(image.permute(1, 2, 0).numpy(), score_thr=score_thr)  # an HxWx3 array: both APIs
        drawn = draw_detections(image, det, score_thr)
        atomic_write(out / f"{name}_det.png", lambda tmp: drawn.save(tmp, format="PNG"))
        record = {"image": path, "vocabulary": vocab.names, "score_thr": score_thr, "detections": det.to_list()}
        atomic_json_dump(record, out / f"{name}.json", indent=1)
        found = ", ".join(f"{d['name']} {d['score']:.2f}" for d in record["detections"]) or "nothing"
        return f"{path}: {found} -> {out / (name + '_det.png')}"
    return for_each_image(list(images), handle, out)
