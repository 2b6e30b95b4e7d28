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


@dataclass
class CocoBoxes:
    """A COCO-format file's images, categories and, per image, its boxes (xyxy, float32) with their
    category ids (int64; -1 where an annotation has no category_id)."""

    images: list[ImageRecord]
    categories: list[dict]
    boxes: dict[Any, np.ndarray]
    category_ids: dict[Any, np.ndarray]

    def boxes_of(self, image_id: Any, categories: "set | None" = None) -> np.ndarray:
        """One image's boxes, only those of `categories` (category ids) if given; (0, 4) if none."""
        boxes = self.boxes.get(image_id, np.zeros((0, 4), np.float32))
        if categories is None or not len(boxes):
            return boxes
        return boxes[np.isin(self.category_ids[image_id], sorted(categories))]


def image_file(entry: dict, where: str) -> str:
    """An image entry's file: COCO's `file_name`, or LVIS v1's `coco_url` tail ('train2017/000000391895.jpg')."""
    if "file_name" in entry:
        return require_field(entry, "file_name", str, where)
    if isinstance(entry, dict) and isinstance(entry.get("coco_url"), str):
        return "/".join(entry["coco_url"].split("/")[-2:])
    raise AnnotationError(f"{where}: missing field 'file_name' (or LVIS's 'coco_url')")


def load_coco_images(ann_file: "str | Path", img_dir: "str | Path") -> tuple[list[ImageRecord], dict[Any, np.ndarray]]:
    """Images and their ground-truth boxes (xyxy, float32) from a COCO-format file (see `load_coco_boxes`)."""
    coco = load_coco_boxes(ann_file, img_dir)
    return coco.images, coco.boxes


def load_coco_boxes(ann_file: "str | Path", img_dir: "str | Path") -> CocoBoxes:
    """Images, categories and ground-truth boxes from a COCO-format file.

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
                                  Path(img_dir) / image_file(entry, where),
                                  int(entry.get("width", 0) or 0), int(entry.get("height", 0) or 0)))
    known = {r.id for r in images}
    if len(known) != len(images):
        raise AnnotationError(f"{ann_file}: image ids in 'images' are not unique")
    categories = data.get("categories", [])
    if not isinstance(categories, list):
        raise AnnotationError(f"{ann_file}: field 'categories' must be a list")
    for i, c in enumerate(categories):
        require_field(c, "id", int, f"{ann_file}: categories[{i}]")
        require_field(c, "name", str, f"{ann_file}: categories[{i}]")
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
        category = require_field(ann, "category_id", int, where) if "category_id" in ann else -1
        boxes[image_id].append((box, category))
    if dropped:
        log.warning("%s: dropped %d boxes with no area", ann_file, dropped)
    return CocoBoxes(images, categories,
                     {k: np.asarray([b for b, _ in v], dtype=np.float32).reshape(-1, 4) for k, v in boxes.items()},
                     {k: np.asarray([c for _, c in v], dtype=np.int64) for k, v in boxes.items()})


def load_proposals(path: "str | Path", max_per_image: int = 300, min_score: float = 0.0) -> dict[Any, np.ndarray]:
    """Proposals in COCO results format ([{image_id, bbox: [x, y, w, h], score}]) -> the top
    `max_per_image` xyxy boxes per image by score."""
    return {k: boxes for k, (boxes, _) in load_scored_proposals(path, max_per_image, min_score).items()}


def load_scored_proposals(path: "str | Path", max_per_image: int = 300, min_score: float = 0.0,
                          need_scores: bool = False) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    """As `load_proposals`, with each image's scores (float32, best first) beside its boxes. An entry without
    a score counts as 1.0 unless `need_scores`; a score that is not a number is an error naming the entry."""
    data = read_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a list of {{'image_id', 'bbox', 'score'}} entries "
                              f"(COCO results format)")
    per_image: dict[Any, list] = defaultdict(list)
    for i, entry in enumerate(data):
        where = f"{path}: [{i}]"
        image_id = require_field(entry, "image_id", (int, str), where)
        box = xywh_to_xyxy(require_field(entry, "bbox", list, where), where)
        score = float(require_field(entry, "score", (int, float), where)) \
            if need_scores or (isinstance(entry, dict) and "score" in entry) else 1.0
        if score >= min_score:
            per_image[image_id].append((score, box))
    out = {}
    for image_id, items in per_image.items():
        items.sort(key=lambda t: -t[0])
        items = items[:max_per_image]
        out[image_id] = (np.asarray([b for _, b in items], dtype=np.float32).reshape(-1, 4),
                         np.asarray([s for s, _ in items], dtype=np.float32))
    return out
