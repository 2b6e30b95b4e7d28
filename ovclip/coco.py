"""Reading COCO-format image lists, boxes and proposal files, with errors that name the field."""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserInputError

log = logging.getLogger(__name__)


class AnnotationError(UserInputError, ValueError):
    """An annotation or proposal file is malformed."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of a COCO-format dataset."""

    id: Any
    path: Path
    width: int
    height: int


def read_json(path: "str | Path") -> Any:
    """Parse a JSON file; a missing or malformed file raises AnnotationError naming it."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def require_field(entry: dict, key: str, kind, where: str) -> Any:
    """entry[key], which must exist and be of type `kind`; AnnotationError naming `where` otherwise."""
    if not isinstance(entry, dict) or key not in entry:
        raise AnnotationError(f"{where}: missing field '{key}'")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise AnnotationError(f"{where}: field '{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def xywh_to_xyxy(bbox: Any, where: str) -> list[float]:
    """COCO [x, y, w, h] -> [x0, y0, x1, y1], rejecting anything that is not four numbers."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise AnnotationError(f"{where}: 'bbox' must be four numbers [x, y, w, h], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def load_coco_images(ann_file: "str | Path", img_dir: "str | Path") -> tuple[list[ImageRecord], dict[Any, np.ndarray]]:
    """Images and their ground-truth boxes (xyxy, float32) from a COCO-format file.

    Boxes with no area are dropped with a logged count; annotations of unknown images are errors.
    """
    data = read_json(ann_file)
    if not isinstance(data, dict):
        raise AnnotationError(f"{ann_file}: expected a JSON object with 'images' and 'annotations'")
    images_raw = data.get("images")
    if not isinstance(images_raw, list):
        raise AnnotationError(f"{ann_file}: missing or malformed field 'images' (a list of image entries)")
    images = []
    for i, entry in enumerate(images_raw):
        where = f"{ann_file}: images[{i}]"
        images.append(ImageRecord(require_field(entry, "id", (int, str), where),
                                  Path(img_dir) / require_field(entry, "file_name", str, where),
                                  int(entry.get("width", 0) or 0), int(entry.get("height", 0) or 0)))
    known = {r.id for r in images}
    if len(known) != len(images):
        raise AnnotationError(f"{ann_file}: image ids in 'images' are not unique")
    boxes: dict[Any, list] = defaultdict(list)
    dropped = 0
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise AnnotationError(f"{ann_file}: field 'annotations' must be a list")
    for i, ann in enumerate(anns):
        where = f"{ann_file}: annotations[{i}]"
        image_id = require_field(ann, "image_id", (int, str), where)
        if image_id not in known:
            raise AnnotationError(f"{where}: image_id {image_id!r} is not in 'images'")
        box = xywh_to_xyxy(require_field(ann, "bbox", list, where), where)
        if box[2] <= box[0] or box[3] <= box[1]:
            dropped += 1
            continue
        boxes[image_id].append(box)
    if dropped:
        log.warning("%s: dropped %d boxes with no area", ann_file, dropped)
    return images, {k: np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in boxes.items()}


def load_proposals(path: "str | Path", max_per_image: int = 300, min_score: float = 0.0) -> dict[Any, np.ndarray]:
    """Proposals in COCO results format ([{image_id, bbox: [x, y, w, h], score}]) -> the top
    `max_per_image` xyxy boxes per image by score."""
    data = read_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a list of {{'image_id', 'bbox', 'score'}} entries "
                              f"(COCO results format)")
    per_image: dict[Any, list] = defaultdict(list)
    for i, entry in enumerate(data):
        where = f"{path}: [{i}]"
        image_id = require_field(entry, "image_id", (int, str), where)
        box = xywh_to_xyxy(require_field(entry, "bbox", list, where), where)
        score = float(entry.get("score", 1.0))
        if score >= min_score:
            per_image[image_id].append((score, box))
    out = {}
    for image_id, items in per_image.items():
        items.sort(key=lambda t: -t[0])
        out[image_id] = np.asarray([b for _, b in items[:max_per_image]], dtype=np.float32).reshape(-1, 4)
    return out
