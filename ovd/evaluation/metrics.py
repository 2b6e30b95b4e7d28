"""The evaluators as mmengine metrics, for the Runner's val / test loops."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric

from ovclip.io import atomic_json_dump

from ..registry import METRICS
from .backends import check_backend
from .coco import DetectionEvaluator
from .lvis import LvisEvaluator


def _cpu_detections(sample: dict, with_masks: bool) -> dict:
    out = {"image_id": sample["image_id"], "boxes": sample["boxes"].detach().cpu(),
           "scores": sample["scores"].detach().cpu(), "labels": sample["labels"].detach().cpu()}
    if with_masks:
        from pycocotools import mask as mask_utils
        binary = (sample["masks"].detach().cpu()[:, 0] > 0.5).numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0))) if len(binary) else []
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
        out["masks"] = list(rles)
    return out


class _EvaluatorMetric(BaseMetric):
    """Collects per-image detections (gathered across ranks by mmengine) and runs an evaluator on rank 0."""

    with_masks = False

    def __init__(self, results_file: Optional[str] = None, collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.results_file = results_file

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:  # noqa: D102 - mmengine API
        self.results.extend(_cpu_detections(s, self.with_masks) for s in data_samples)

    @abstractmethod
    def _evaluator(self):
        """A fresh evaluator (DetectionEvaluator or LvisEvaluator)."""

    def compute_metrics(self, results: list) -> dict[str, float]:  # noqa: D102 - mmengine API
        evaluator = self._evaluator()
        for r in results:
            if self.with_masks:
                evaluator.process(r["image_id"], r["boxes"], r["scores"], r["labels"], masks=r["masks"])
            else:
                evaluator.process(r["image_id"], r["boxes"], r["scores"], r["labels"])
        metrics = evaluator.evaluate()
        if self.results_file:
            atomic_json_dump(evaluator.results, self.results_file)
        return metrics


@METRICS.register_module()
class DetectionMetric(_EvaluatorMetric):
    """COCO-format box AP50 / AP over a vocabulary, split into base / novel when it has a split
    (OV-COCO: `vocabulary='ov-coco'`). `image_set`: 'all' or 'annotated' images (DetectionEvaluator;
    default 'annotated' for OV-COCO, 'all' otherwise). `backend`: 'faster' or 'reference' (pycocotools)."""

    default_prefix = "det"

    def __init__(self, ann_file: str, vocabulary: Any, out_dir: Optional[str] = None, name: str = "coco",
                 image_set: Optional[str] = None, backend: str = "faster", **kwargs):
        super().__init__(**kwargs)
        self.ann_file, self.vocabulary, self.out_dir, self.name = ann_file, vocabulary, out_dir, name
        self.image_set, self.backend = image_set, check_backend(backend)

    def _evaluator(self) -> DetectionEvaluator:
        return DetectionEvaluator(self.ann_file, self.vocabulary, self.out_dir, self.name, self.image_set,
                                  self.backend)


@METRICS.register_module()
class LvisMetric(_EvaluatorMetric):
    """LVIS v1 AP / APr / APc / APf for boxes ('bbox') or masks ('segm'). `backend`: 'faster' or
    'reference' (lvis-api)."""

    default_prefix = "lvis"

    def __init__(self, ann_file: str, vocabulary: Any = "lvis-v1", iou_type: str = "bbox",
                 out_dir: Optional[str] = None, max_dets: int = 300, backend: str = "faster", **kwargs):
        super().__init__(**kwargs)
        self.ann_file, self.vocabulary, self.iou_type = ann_file, vocabulary, iou_type
        self.out_dir, self.max_dets, self.backend = out_dir, max_dets, check_backend(backend)
        self.with_masks = iou_type == "segm"

    def _evaluator(self) -> LvisEvaluator:
        return LvisEvaluator(self.ann_file, self.vocabulary, self.out_dir, self.iou_type, self.max_dets,
                             self.backend)


