"""COCO-style detection evaluation (faster-coco-eval, or pycocotools with backend='reference'), split into
base / novel classes."""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from ovclip.io import atomic_json_dump
from ovclip.vocabulary import Vocabulary, load_vocabulary, match_categories

from .backends import coco_api, quiet

def to_coco_results(image_id: Any, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                    category_ids: Sequence[int]) -> list[dict]:
    """Detections of one image (xyxy boxes, label = vocabulary position) as COCO results entries."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4).tolist()
    out = []
    for (x0, y0, x1, y1), s, lab in zip(boxes, torch.as_tensor(scores).tolist(), torch.as_tensor(labels).tolist()):
        out.append({"image_id": image_id, "category_id": int(category_ids[int(lab)]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)})
    return out


def mean_or_nan(values: Sequence[float]) -> float:
    """Mean of the finite values, NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def format_table(metrics: dict[str, float], title: str) -> str:
    """A small markdown table of metric name -> value."""
    lines = [f"{title}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(lines)


IMAGE_SETS = ("all", "annotated")


class DetectionEvaluator:
    """reset / process / evaluate over a COCO-format ground truth, reporting AP50 (and AP) for
    all classes of the vocabulary and, when it has a split, for its base and novel parts.

    `image_set`: which of the processed images are evaluated: 'all', or 'annotated' (those with at least
    one annotation of the vocabulary's classes, crowd included: the OV-COCO protocol of OVR-CNN, ViLD and
    Detic, whose val set is the 4836 val2017 images with one of the 65 classes). Default: 'annotated'
    for the OV-COCO vocabulary, 'all' otherwise. `backend`: 'faster' (faster-coco-eval) or 'reference'
    (pycocotools), the same numbers (`ovd.evaluation.backends`).
    """

    def __init__(self, ann_file: "str | Path", vocabulary: "Vocabulary | str", out_dir: "str | Path | None" = None,
                 name: str = "coco", image_set: Optional[str] = None, backend: str = "faster"):
        self.ann_file = str(ann_file)
        coco, self._cocoeval = coco_api(backend)
        self.backend = backend
        with contextlib.redirect_stdout(io.StringIO()):
            self.gt = coco(self.ann_file)
        self.vocabulary = load_vocabulary(vocabulary)
        self.category_ids = match_categories(self.vocabulary, self.gt.loadCats(self.gt.getCatIds()), self.ann_file)
        if image_set is None:
            image_set = "annotated" if self.vocabulary.name == "ov-coco" else "all"
        if image_set not in IMAGE_SETS:
            raise ValueError(f"image_set must be one of {IMAGE_SETS}, not '{image_set}'")
        self.image_set = image_set
        self.out_dir = Path(out_dir) if out_dir else None
        self.name = name
        self.reset()

    def reset(self) -> None:
        """Forget all processed detections."""
        self.results: list[dict] = []
        self.image_ids: list[Any] = []

    def process(self, image_id: Any, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one image's detections (xyxy boxes, scores, labels as vocabulary positions)."""
        if image_id not in self.gt.imgs:
            raise KeyError(f"image {image_id!r} is not in {self.ann_file}")
        self.image_ids.append(image_id)
        self.results.extend(to_coco_results(image_id, boxes, scores, labels, self.category_ids))

    def evaluated_images(self) -> list[Any]:
        """The processed images that `image_set` keeps, sorted."""
        ids = set(self.image_ids)
        if self.image_set == "annotated":
            ids &= {a["image_id"] for a in self.gt.loadAnns(self.gt.getAnnIds(catIds=self.category_ids))}
        return sorted(ids)

    def _per_class_ap(self, image_ids: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """AP50 and AP per vocabulary class (NaN where the class has no ground truth)."""
        k = len(self.category_ids)
        keep = set(image_ids)
        results = [r for r in self.results if r["image_id"] in keep]
        if not results:
            return np.zeros(k), np.zeros(k)
        with contextlib.redirect_stdout(io.StringIO()):
            dt = self.gt.loadRes([dict(r) for r in results])  # loadRes adds fields in place
            e = quiet(self._cocoeval(self.gt, dt, "bbox"))
            e.params.imgIds = image_ids
            e.params.catIds = self.category_ids
            e.evaluate()
            e.accumulate()
        precision = e.eval["precision"]  # [iou, recall, class, area, max dets]; classes in sorted id order
        column = {cat: i for i, cat in enumerate(e.params.catIds)}
        ap50, ap = np.full(k, np.nan), np.full(k, np.nan)
        for i, cat in enumerate(self.category_ids):
            p50, pall = precision[0, :, column[cat], 0, -1], precision[:, :, column[cat], 0, -1]
            if (p50 > -1).any():
                ap50[i] = p50[p50 > -1].mean() * 100
                ap[i] = pall[pall > -1].mean() * 100
        return ap50, ap

    def evaluate(self) -> dict[str, float]:
        """Compute the metrics, write results / metrics json to out_dir, print a table."""
        image_ids = self.evaluated_images()
        ap50, ap = self._per_class_ap(image_ids)
        metrics = {"AP50": mean_or_nan(ap50), "AP": mean_or_nan(ap)}
        if self.vocabulary.split is not None:
            for part in ("base", "novel"):
                idx = self.vocabulary.indices(part)
                metrics[f"AP50_{part}"] = mean_or_nan(ap50[idx])
                metrics[f"AP_{part}"] = mean_or_nan(ap[idx])
        metrics["images"] = len(image_ids)
        if self.out_dir is not None:
            atomic_json_dump(self.results, self.out_dir / f"{self.name}_results.json")
            atomic_json_dump({"metrics": metrics, "image_set": self.image_set,
                              "images_processed": len(set(self.image_ids)),
                              "per_class_AP50": dict(zip(self.vocabulary.names, map(float, ap50)))},
                             self.out_dir / f"{self.name}_metrics.json", indent=1)
        print(format_table(metrics, f"{self.name} detection ({self.vocabulary.name}, {metrics['images']} images: "
                                    f"{self.image_set})"))
        return metrics


class OVCocoEvaluator(DetectionEvaluator):
    """OV-COCO: the 65 classes evaluated together, AP50 reported for novel (17), base (48) and all."""

    def __init__(self, ann_file: "str | Path", out_dir: "str | Path | None" = None, image_set: str = "annotated",
                 backend: str = "faster"):
        super().__init__(ann_file, "ov-coco", out_dir, name="ov-coco", image_set=image_set, backend=backend)
