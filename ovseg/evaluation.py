"""mIoU from a confusion matrix, split into base / novel classes, as an mmengine metric."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from PIL import Image

from ovclip.io import atomic_json_dump, atomic_write
from ovclip.vocabulary import Vocabulary, load_vocabulary

from .data import BACKGROUND, IGNORE
from .registry import METRICS


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE) -> torch.Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ignored and background pixels are
    left out."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size")
    keep = (gt != ignore_index) & (gt != BACKGROUND)
    gt, pred = gt[keep].long(), pred[keep].long()
    if len(gt) and (int(gt.max()) >= num_classes or int(gt.min()) < 0):
        raise ValueError(f"ground-truth labels must be in 0..{num_classes - 1} or {ignore_index}")
    if len(pred) and (int(pred.max()) >= num_classes or int(pred.min()) < 0):
        raise ValueError(f"predicted labels must be in 0..{num_classes - 1}")
    return torch.bincount(gt * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_metrics(confusion: "np.ndarray | torch.Tensor", vocabulary: Optional[Vocabulary] = None) -> dict[str, Any]:
    """mIoU, mAcc and pixel accuracy (aAcc) of a confusion matrix, in percent.

    A class counts in a mean when it appears in the ground truth or in the predictions (its union is
    not empty), as in mmsegmentation; a class that is predicted but absent scores 0. With a vocabulary
    that has a base / novel split, mIoU_base and mIoU_novel are the means over each part.
    """
    conf = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(conf)
    gt_count, pred_count = conf.sum(1), conf.sum(0)
    union = gt_count + pred_count - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt_count > 0, tp / gt_count, np.nan)

    def mean(values: np.ndarray) -> float:
        return float(100 * np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    total = conf.sum()
    out: dict[str, Any] = {"mIoU": mean(iou), "mAcc": mean(acc),
                           "aAcc": float(100 * tp.sum() / total) if total else float("nan")}
    if vocabulary is not None and vocabulary.split is not None:
        for part in ("base", "novel"):
            idx = vocabulary.indices(part)
            out[f"mIoU_{part}"] = mean(iou[idx]) if idx else float("nan")
    out["per_class"] = {name: (None if np.isnan(v) else round(float(100 * v), 3))
                        for name, v in zip(vocabulary.names if vocabulary is not None else range(len(iou)), iou)}
    return out


def save_label_png(label: torch.Tensor, path: Path) -> None:
    """Write a (H, W) label map (vocabulary positions, 255 for none) as a single-channel PNG."""
    array = label.detach().cpu().clamp(0, 255).to(torch.uint8).numpy()
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


@METRICS.register_module()
class SegMetric(BaseMetric):
    """mIoU / mAcc / aAcc over the whole test set (one confusion matrix summed over images and ranks),
    with base / novel mIoU; per-class IoU goes to `out_dir/seg_per_class.json`."""

    default_prefix = "seg"

    def __init__(self, vocabulary: "Vocabulary | str | Sequence[str]", out_dir: Optional[str] = None,
                 results_file: Optional[str] = None, collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.vocabulary = load_vocabulary(vocabulary)
        self.out_dir = out_dir
        self.results_dir = Path(results_file) if results_file else None  # tools/test.py --out: label PNGs

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Add each image's confusion matrix (prediction `pred` against `gt`, same size)."""
        k = len(self.vocabulary)
        for sample in data_samples:
            if self.results_dir is not None:
                stem = Path(sample.get("img_path", f"image{len(self.results)}")).stem
                save_label_png(sample["pred"], self.results_dir / f"{stem}.png")
            self.results.append(confusion_matrix(sample["pred"].cpu(), sample["gt"].cpu(), k).numpy())

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Sum the confusion matrices and turn them into metrics."""
        k = len(self.vocabulary)
        conf = np.sum(results, axis=0) if results else np.zeros((k, k), np.int64)
        metrics = iou_metrics(conf, self.vocabulary)
        per_class = metrics.pop("per_class")
        if self.out_dir:
            atomic_json_dump({"metrics": metrics, "iou_per_class": per_class, "images": len(results)},
                             Path(self.out_dir) / "seg_per_class.json", indent=1)
        return {key: round(v, 3) for key, v in metrics.items()}
