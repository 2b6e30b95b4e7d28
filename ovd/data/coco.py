"""COCO-format detection datasets (COCO, OV-COCO, LVIS v1, OV-LVIS, any json + image folder).

Labels are positions in the dataset's vocabulary. For open-vocabulary training, `train_classes="base"`
keeps only the annotations of the vocabulary's base classes (OV-COCO's 48, OV-LVIS's common +
frequent); novel objects stay in the images, unannotated, as in the papers.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from mmengine.logging import print_log
from torchvision import tv_tensors

from ovclip.coco import AnnotationError, image_file, read_json, require_field, xywh_to_xyxy
from ovclip.io import ImageReadError, read_image
from ovclip.store import FeatureStore
from ovclip.transforms import build_pipeline
from ovclip.vocabulary import Vocabulary, VocabularyError, load_vocabulary, match_categories

from ..registry import DATASETS, FUNCTIONS
from .transforms import drop_degenerate

log = logging.getLogger(__name__)


@dataclass
class DetectionRecord:
    """One image and its kept annotations (xyxy boxes in pixels, labels as vocabulary positions)."""

    id: Any
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    segmentations: list = field(default_factory=list)
    weights: Optional[np.ndarray] = None  # per box, with pseudo-annotations: 1 for ground truth, else its score


def _dataset_vocabulary(categories: list[dict], vocabulary: "Vocabulary | str | Sequence[str] | None",
                        ann_file: str) -> Vocabulary:
    """The vocabulary with category ids: the file's own categories, or the given one matched to them."""
    if vocabulary is None:
        names = [(c["name"].replace("_", " "),) for c in categories]
        freq = [c.get("frequency") for c in categories]
        return Vocabulary(tuple(names), ids=tuple(c["id"] for c in categories),
                          frequency=tuple(freq) if all(f in ("r", "c", "f") for f in freq) else None,
                          name=Path(ann_file).stem)
    vocab = load_vocabulary(vocabulary)
    ids = match_categories(vocab, categories, ann_file)
    return Vocabulary(vocab.synonyms, ids=tuple(ids), split=vocab.split, frequency=vocab.frequency, name=vocab.name)


def load_detection_annotations(ann_file: "str | Path", img_dir: "str | Path",
                               vocabulary: "Vocabulary | str | Sequence[str] | None" = None,
                               train_classes: str = "all", with_masks: bool = False
                               ) -> tuple[list[DetectionRecord], Vocabulary, Counter]:
    """Parse and check a COCO/LVIS-format file. Malformed fields and unknown image or category ids are
    errors naming the entry; crowd, degenerate and excluded-class boxes are dropped and counted."""
    ann_file = str(ann_file)
    data = read_json(ann_file)
    if not isinstance(data, dict):
        raise AnnotationError(f"{ann_file}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{ann_file}: missing or malformed field '{key}' (a list)")
    categories = []
    for i, c in enumerate(data["categories"]):
        where = f"{ann_file}: categories[{i}]"
        categories.append({**c, "id": require_field(c, "id", int, where), "name": require_field(c, "name", str, where)})
    if len({c["id"] for c in categories}) != len(categories):
        raise AnnotationError(f"{ann_file}: category ids in 'categories' are not unique")
    vocab = _dataset_vocabulary(categories, vocabulary, ann_file)
    if train_classes not in ("all", "base"):
        raise ValueError(f"train_classes must be 'all' or 'base', not '{train_classes}'")
    if train_classes == "base" and vocab.split is None:
        raise VocabularyError(f"train_classes='base' needs a vocabulary with a base/novel split; "
                              f"'{vocab.name}' has none (use e.g. 'ov-coco' or 'ov-lvis')")
    keep = {cid: pos for pos, cid in enumerate(vocab.ids)
            if train_classes == "all" or vocab.split[pos] == "base"}
    known_cats = {c["id"] for c in categories}

    records: dict[Any, DetectionRecord] = {}
    for i, entry in enumerate(data["images"]):
        where = f"{ann_file}: images[{i}]"
        image_id = require_field(entry, "id", (int, str), where)
        if image_id in records:
            raise AnnotationError(f"{where}: image id {image_id!r} appears twice in 'images'")
        records[image_id] = DetectionRecord(image_id, Path(img_dir) / image_file(entry, where),
                                            int(entry.get("width") or 0), int(entry.get("height") or 0),
                                            np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    boxes: dict[Any, list] = {k: [] for k in records}
    stats: Counter = Counter()
    for i, ann in enumerate(data["annotations"]):
        where = f"{ann_file}: annotations[{i}]"
        image_id = require_field(ann, "image_id", (int, str), where)
        if image_id not in records:
            raise AnnotationError(f"{where}: image_id {image_id!r} is not in 'images'")
        cat = require_field(ann, "category_id", int, where)
        if cat not in known_cats:
            raise AnnotationError(f"{where}: category_id {cat} is not in 'categories'; fix the annotation or "
                                  f"add the category")
        box = xywh_to_xyxy(require_field(ann, "bbox", list, where), where)
        if ann.get("iscrowd", 0):
            stats["crowd"] += 1
            continue
        if cat not in keep:
            stats["excluded_class"] += 1
            continue
        if not all(math.isfinite(v) for v in box) or box[2] - box[0] < 1 or box[3] - box[1] < 1:
            stats["degenerate"] += 1
            continue
        if with_masks and "segmentation" not in ann:
            raise AnnotationError(f"{where}: missing field 'segmentation' (the dataset was asked for masks)")
        boxes[image_id].append((box, keep[cat], ann.get("segmentation")))
    for image_id, items in boxes.items():
        rec = records[image_id]
        rec.boxes = np.asarray([b for b, _, _ in items], np.float32).reshape(-1, 4)
        rec.labels = np.asarray([lab for _, lab, _ in items], np.int64)
        if with_masks:
            rec.segmentations = [s for _, _, s in items]
    stats["annotations_kept"] = sum(len(r.labels) for r in records.values())
    if stats["degenerate"]:
        log.warning("%s: dropped %d empty or degenerate boxes (width or height < 1 pixel)", ann_file,
                    stats["degenerate"])
    return list(records.values()), vocab, stats


PSEUDO_WEIGHTS = ("score", "one")


def merge_pseudo_annotations(records: Sequence[DetectionRecord], vocab: Vocabulary, files: "str | Sequence[str]",
                             weight: str = "score") -> Counter:
    """Add the boxes of pseudo-annotation files (COCO format, as tools/pseudo_boxes.py writes them) to the
    records' ground truth, whatever the dataset's train_classes. Every box gets a loss weight: 1 for
    ground truth and, with `weight='score'` (VL-PLM), its pseudo-label's `score` (or VL-PLM's `confidence`);
    'one' weighs them all alike. Returns the count per class name; an entry naming an image or category the
    dataset does not have is an error naming it."""
    if weight not in PSEUDO_WEIGHTS:
        raise ValueError(f"pseudo_weight must be one of {PSEUDO_WEIGHTS}, not '{weight}'")
    by_id = {r.id: r for r in records}
    position = {cid: pos for pos, cid in enumerate(vocab.ids)}
    added: dict[Any, list] = {}
    counts: Counter = Counter()
    for path in [files] if isinstance(files, (str, Path)) else list(files):
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise AnnotationError(f"{path}: expected a COCO-format object with an 'annotations' list "
                                  f"(tools/pseudo_boxes.py writes one)")
        for i, ann in enumerate(data["annotations"]):
            where = f"{path}: annotations[{i}]"
            image_id = require_field(ann, "image_id", (int, str), where)
            if image_id not in by_id:
                raise AnnotationError(f"{where}: image_id {image_id!r} is not an image of this dataset; were "
                                      f"these pseudo-labels made for another annotation file?")
            cat = require_field(ann, "category_id", int, where)
            if cat not in position:
                raise AnnotationError(f"{where}: category_id {cat} is not a class of vocabulary '{vocab.name}'")
            box = xywh_to_xyxy(require_field(ann, "bbox", list, where), where)
            if not all(math.isfinite(v) for v in box) or box[2] - box[0] < 1 or box[3] - box[1] < 1:
                counts["(degenerate, dropped)"] += 1
                continue
            key = "score" if "score" in ann else "confidence"
            score = require_field(ann, key, (int, float), where) if key in ann else 1.0
            if not 0 <= score <= 1:
                raise AnnotationError(f"{where}: '{key}' must be in [0, 1], got {score}")
            added.setdefault(image_id, []).append((box, position[cat], score if weight == "score" else 1.0))
            counts[vocab.names[position[cat]]] += 1
    for rec in records:
        rec.weights = np.ones(len(rec.labels), np.float32)
        extra = added.get(rec.id, [])
        if extra:
            rec.boxes = np.concatenate([rec.boxes, np.asarray([b for b, _, _ in extra], np.float32)])
            rec.labels = np.concatenate([rec.labels, np.asarray([lab for _, lab, _ in extra], np.int64)])
            rec.weights = np.concatenate([rec.weights, np.asarray([w for _, _, w in extra], np.float32)])
    return counts


def _segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """COCO polygon / RLE -> (H, W) uint8 mask."""
    from pycocotools import mask as mask_utils
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(np.uint8)


@DATASETS.register_module()
class CocoDetection(Dataset):
    """A COCO-format detection dataset: images as uint8 (3, H, W) tensors and targets with
    `boxes` (xyxy), `labels` (vocabulary positions), optional `masks`, and the teacher's
    `distill_boxes` / `distill_embeddings` when a feature store is given.

    A missing or corrupt image is skipped with a counted warning (`on_bad_image="skip"`, the next
    image is served instead) or raises ImageReadError naming the file (`"error"`). `filter_empty`: no image
    without boxes is served: those without annotations are dropped at load, and a sample whose boxes the
    pipeline removed (a crop) is replaced by the next image's, as DETR's datasets do (counted in
    `stats["emptied_by_pipeline"]`).
    """

    def __init__(self, ann_file: str, img_dir: str, vocabulary: "Vocabulary | str | Sequence[str] | None" = None,
                 train_classes: str = "all", pipeline: Optional[Sequence[Mapping]] = None,
                 with_masks: bool = False, filter_empty: bool = False, feature_store: Optional[str] = None,
                 max_distill_regions: int = 300, on_bad_image: str = "skip", max_images: Optional[int] = None,
                 pseudo_annotations: "str | Sequence[str] | None" = None, pseudo_weight: str = "score"):
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"on_bad_image must be 'skip' or 'error', not '{on_bad_image}'")
        self.ann_file, self.img_dir = str(ann_file), str(img_dir)
        records, self.vocabulary, self.stats = load_detection_annotations(
            ann_file, img_dir, vocabulary, train_classes, with_masks)
        self.with_pseudo = bool(pseudo_annotations)
        if self.with_pseudo:
            if with_masks:
                raise ValueError("pseudo_annotations are boxes without masks; train a detector without the mask "
                                 "head (with_masks=False) on them")
            counts = merge_pseudo_annotations(records, self.vocabulary, pseudo_annotations, pseudo_weight)
            self.stats["pseudo_annotations"] = sum(v for k, v in counts.items() if not k.startswith("("))
            print_log(f"{ann_file}: {self.stats['pseudo_annotations']} pseudo-annotations from "
                      f"{pseudo_annotations} (loss weight: {pseudo_weight}), per class: {dict(counts)}",
                      logger="current")
        if filter_empty:
            self.stats["images_without_boxes"] = sum(1 for r in records if not len(r.labels))
            records = [r for r in records if len(r.labels)]
        self.records = records[:max_images] if max_images else records
        if not self.records:
            raise AnnotationError(f"{ann_file}: no images left to use (filter_empty={filter_empty}, "
                                  f"train_classes='{train_classes}')")
        self.pipeline = build_pipeline(pipeline)
        self.with_masks, self.on_bad_image, self.filter_empty = with_masks, on_bad_image, filter_empty
        self.store = FeatureStore(feature_store) if feature_store else None
        self.max_distill_regions = max_distill_regions
        self.bad_images = 0
        log.info("%s: %d images, %s", ann_file, len(self.records), dict(self.stats))

    @property
    def metainfo(self) -> dict:
        """Class names and split, saved in checkpoints by mmengine."""
        return self.vocabulary.metainfo()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int) -> dict:
        sample = None
        for attempt in range(len(self.records)):
            rec = self.records[(idx + attempt) % len(self.records)]
            try:
                image = read_image(rec.path)
            except ImageReadError as e:
                if self.on_bad_image == "error":
                    raise ImageReadError(f"{e} (listed in {self.ann_file}; set on_bad_image='skip' to skip "
                                         f"unreadable images)") from None
                self.bad_images += 1
                log.warning("skipped unreadable image (%d so far in this process): %s", self.bad_images, e)
                continue
            sample = self._sample(rec, image)
            if not (self.filter_empty and len(rec.labels) and not len(sample["data_samples"]["labels"])):
                return sample
            self.stats["emptied_by_pipeline"] += 1
        if sample is not None:  # every image's boxes cropped away this time: the last one, empty
            return sample
        raise ImageReadError(f"none of the {len(self.records)} images of {self.ann_file} can be read")

    def _sample(self, rec: DetectionRecord, image: torch.Tensor) -> dict:
        h, w = image.shape[-2:]
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(rec.boxes), format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(rec.labels)}
        if self.with_pseudo:
            target["weights"] = torch.from_numpy(rec.weights)
        if self.with_masks:
            masks = [_segmentation_to_mask(s, h, w) for s in rec.segmentations]
            target["masks"] = tv_tensors.Mask(torch.from_numpy(np.stack(masks)) if masks
                                              else torch.zeros(0, h, w, dtype=torch.uint8))
        if self.store is not None:
            stored = self.store.get(rec.id)
            if stored is None:
                self.stats["images_not_in_store"] += 1
                stored = (torch.zeros(0, 4), torch.zeros(0, int(self.store.meta["embed_dim"])))
            d_boxes, d_emb = stored
            target["distill_boxes"] = tv_tensors.BoundingBoxes(d_boxes[: self.max_distill_regions].float(),
                                                               format="XYXY", canvas_size=(h, w))
            target["distill_embeddings"] = d_emb[: self.max_distill_regions].float()
        image = tv_tensors.Image(image)
        if self.pipeline is not None:
            image, target = self.pipeline(image, target)
        keep = drop_degenerate(target["boxes"])
        out = {"image_id": rec.id, "ori_shape": (h, w), "boxes": target["boxes"].as_subclass(torch.Tensor)[keep],
               "labels": target["labels"][keep]}
        if self.with_pseudo:
            out["weights"] = target["weights"][keep]
        if self.with_masks:
            out["masks"] = target["masks"].as_subclass(torch.Tensor)[keep]
        if self.store is not None:
            ok = drop_degenerate(target["distill_boxes"])
            out["distill_boxes"] = target["distill_boxes"].as_subclass(torch.Tensor)[ok]
            out["distill_embeddings"] = target["distill_embeddings"][ok]
        return {"inputs": image.as_subclass(torch.Tensor), "data_samples": out}


@FUNCTIONS.register_module()
def detection_collate(batch: Sequence[dict]) -> dict:
    """Lists of images (of any size) and of target dicts: the detector batches and resizes them itself."""
    return {"inputs": [b["inputs"] for b in batch], "data_samples": [b["data_samples"] for b in batch]}
