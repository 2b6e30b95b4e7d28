"""Class-agnostic RPN proposals of a trained detector, for the teacher's region store (ViLD's recipe:
an RPN trained on base classes proposes the regions whose CLIP embeddings are distilled)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

from torch import Tensor
from tqdm import tqdm

from ovclip.io import (ImageReadError, atomic_json_dump, open_jsonl_for_append, read_image, read_jsonl,
                       to_unit_float)

from .api import Detector
from .data.coco import load_detection_annotations
from ovclip.engine import load_config

log = logging.getLogger(__name__)


def _done_entries(partial: Path) -> dict:
    """image id (as its JSON text) -> entries already written."""
    return {json.dumps(row["image_id"]): row["proposals"] for row in read_jsonl(partial)}


def dump_proposals(config: str, checkpoint: str, out: str, split: str = "train", max_per_image: int = 300,
                   device: str = "cpu", progress: bool = True, max_images: Optional[int] = None,
                   refine: int = 0) -> dict:
    """Write the proposals of every image of the config's `split` dataset as COCO results json
    ([{image_id, bbox: [x, y, w, h], score}]). Progress goes to `out + '.partial.jsonl'`, one image per
    line, so a killed job resumes where it stopped; unreadable images are skipped and counted. `refine`:
    VL-PLM's box refinement by the detector's RoI head, that many times (ViLD.proposals)."""
    cfg = load_config(config)
    ds_cfg = cfg[f"{split}_dataloader"].dataset
    detector = Detector.from_config(config, checkpoint, device=device)
    return write_proposals(lambda image: detector.model.detector.proposals([image], refine)[0], ds_cfg.ann_file,
                           ds_cfg.img_dir, out, max_per_image, device, progress, max_images)


def write_proposals(propose: Callable[[Tensor], tuple[Tensor, Tensor]], ann_file: str, img_dir: str, out: str,
                    max_per_image: int = 300, device: str = "cpu", progress: bool = True,
                    max_images: Optional[int] = None) -> dict:
    """dump_proposals with the detector given as `propose`: a unit-float CHW image -> (boxes in its
    pixels, scores), best first (e.g. a model in memory: `lambda im: model.detector.proposals([im])[0]`)."""
    records, _, _ = load_detection_annotations(ann_file, img_dir, None)
    records = records[:max_images] if max_images else records
    partial = Path(f"{out}.partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    done = _done_entries(partial)
    stats = {"images": 0, "resumed": 0, "bad_images": 0, "proposals": 0}
    with open_jsonl_for_append(partial) as f:
        for rec in tqdm(records, desc="proposals", disable=not progress, unit="img"):
            if json.dumps(rec.id) in done:
                stats["resumed"] += 1
                continue
            try:
                image = to_unit_float(read_image(rec.path)).to(device)
            except ImageReadError as e:
                stats["bad_images"] += 1
                log.warning("skipping image %s: %s", rec.id, e)
                continue
            boxes, scores = propose(image)
            boxes, scores = boxes[:max_per_image].cpu(), scores[:max_per_image].cpu()
            rows = [[round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)] + [round(s, 5)]
                    for (x0, y0, x1, y1), s in zip(boxes.tolist(), scores.tolist())]
            f.write(json.dumps({"image_id": rec.id, "proposals": rows}) + "\n")
            f.flush()
            done[json.dumps(rec.id)] = rows
            stats["images"] += 1
    entries = [{"image_id": json.loads(k), "bbox": r[:4], "score": r[4]} for k, rows in done.items() for r in rows]
    stats["proposals"] = len(entries)
    atomic_json_dump(entries, out)
    partial.unlink()
    return stats


__all__ = ["dump_proposals", "write_proposals"]
