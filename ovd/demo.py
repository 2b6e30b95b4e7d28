"""The demo behind tools/demo.py: detections drawn on each image, plus a json per image."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ovclip.io import atomic_json_dump, atomic_write, for_each_image

from .api import Detections, Detector


PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


def draw_detections(image: torch.Tensor, det: Detections) -> torch.Tensor:
    """uint8 (3, H, W) image with boxes, 'name score' captions and masks (if any) drawn on it."""
    colours = [PALETTE[i % len(PALETTE)] for i in det.labels.tolist()]
    out = image
    if det.masks is not None and len(det):
        out = draw_segmentation_masks(out, det.masks > 0.5, alpha=0.4, colors=colours)
    if len(det):
        captions = [f"{n} {s:.2f}" for n, s in zip(det.names, det.scores.tolist())]
        out = draw_bounding_boxes(out, det.boxes, labels=captions, colors=colours, width=2)
    return out


def run_demo(config: str, checkpoint: Optional[str], images: Sequence[str], vocabulary: str, out_dir: str,
             score_thr: float = 0.3, device: str = "cpu", cfg_options: Optional[dict] = None) -> list[str]:
    """Write `<stem>_det.png` and `<stem>.json` for every image into out_dir; returns the images that
    could not be read (each is reported, the others still run). `cfg_options` override config keys."""
    detector = Detector.from_config(config, checkpoint, device=device, cfg_options=cfg_options)
    vocab = detector.set_vocabulary(vocabulary)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def handle(path: str, image: torch.Tensor) -> str:
        det = detector.predict(image, score_thr=score_thr)
        stem = Path(path).stem
        drawn = draw_detections(image, det)
        atomic_write(out / f"{stem}_det.png",
                     lambda tmp: Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(tmp, format="PNG"))
        record = {"image": path, "vocabulary": vocab.names, "score_thr": score_thr, "detections": det.to_list()}
        atomic_json_dump(record, out / f"{stem}.json", indent=1)
        found = ", ".join(f"{d['name']} {d['score']:.2f}" for d in record["detections"]) or "nothing"
        return f"{path}: {found} -> {out / (stem + '_det.png')}"
    return for_each_image(list(images), handle, out)
