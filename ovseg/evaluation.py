"""Segmentation metrics: mmseg's IoUMetric over an open vocabulary, with base / novel mIoU and their
harmonic mean (hIoU). mmseg is imported when a SegMetric is built, not with this module (~2.5 s: the demo
and the tools that only write label maps do without it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from PIL import Image

from ovclip.io import atomic_json_dump, atomic_write
from ovclip.vocabulary import Vocabulary, load_vocabulary

from .labels import BACKGROUND, IGNORE
from .mmseg_compat import import_mmseg
from .registry import METRICS


def iou_metric() -> type:
    """mmseg's IoUMetric, whose histogram and metric functions SegMetric uses (mmseg imported on first call)."""
    return import_mmseg("evaluation").evaluation.IoUMetric


def label_maps(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, ground truth) (H, W) label maps of one evaluated sample: an ovseg model's dict ('pred',
    'gt') or an mmseg data sample ('pred_sem_seg', 'gt_sem_seg')."""
    if "pred" in sample:
        pred, gt = sample["pred"], sample["gt"]
    else:
        pred, gt = sample["pred_sem_seg"]["data"].squeeze(0), sample["gt_sem_seg"]["data"].squeeze(0)
    pred, gt = pred.cpu().long(), gt.cpu().long()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size")
    return pred, gt


def check_labels(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> None:
    """Ground truth must be a class, IGNORE or BACKGROUND; predictions a class."""
    counted = gt[(gt != IGNORE) & (gt != BACKGROUND)]
    if len(counted) and (int(counted.max()) >= num_classes or int(counted.min()) < 0):
        raise ValueError(f"ground-truth labels must be in 0..{num_classes - 1}, {IGNORE} (ignored) or "
                         f"{BACKGROUND} (background)")
    if pred.numel() and (int(pred.max()) >= num_classes or int(pred.min()) < 0):
        raise ValueError(f"predicted labels must be in 0..{num_classes - 1}")


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b) (hIoU of base and novel mIoU, zero-shot segmentation's summary): NaN if either is."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def save_label_png(label: torch.Tensor, path: Path) -> None:
    """Write a (H, W) label map (vocabulary positions, 255 for none) as a single-channel PNG."""
    array = label.detach().cpu().clamp(0, 255).to(torch.uint8).numpy()
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


@METRICS.register_module()
class SegMetric(BaseMetric):
    """mmseg's IoUMetric (per-image intersection / union histograms, summed over the test set and ranks;
    a class counts in a mean when its union is not empty) over an open vocabulary: mIoU / mAcc / aAcc in
    percent, plus mIoU over the base and the novel classes and their harmonic mean `hIoU` when the
    vocabulary has a split. BACKGROUND pixels count as ignored. Per-class IoU goes to
    `out_dir/seg_per_class.json`; `results_file` (tools/test.py --out) gets each image's label PNG."""

    default_prefix = "seg"

    def __init__(self, vocabulary: "Vocabulary | str | Sequence[str]", out_dir: Optional[str] = None,
                 results_file: Optional[str] = None, collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self._iou = iou_metric()  # here, so that a missing mmseg shows before training, not at the first validation
        self.vocabulary = load_vocabulary(vocabulary)
        self.out_dir = out_dir
        self.results_dir = Path(results_file) if results_file else None

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Add each image's intersection / union histograms (prediction against ground truth, same size)."""
        k = len(self.vocabulary)
        for sample in data_samples:
            pred, gt = label_maps(sample)
            check_labels(pred, gt, k)
            if self.results_dir is not None:
                stem = Path(sample.get("img_path", f"image{len(self.results)}")).stem
                save_label_png(pred, self.results_dir / f"{stem}.png")
            gt = gt.masked_fill(gt == BACKGROUND, IGNORE)
            # float64 from here: mmseg's float32 histograms are exact per image, not summed over a test set
            self.results.append(tuple(t.double() for t in self._iou.intersect_and_union(pred, gt, k, IGNORE)))

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Sum the histograms and turn them into metrics."""
        k = len(self.vocabulary)
        totals = [sum(r[i] for r in results) if results else torch.zeros(k, dtype=torch.float64) for i in range(4)]
        per_class = self._iou.total_area_to_metrics(*totals, ["mIoU"])
        metrics = summary(per_class["IoU"], per_class["Acc"], float(per_class["aAcc"]), self.vocabulary)
        if self.out_dir:
            iou = {name: (None if np.isnan(v) else round(float(100 * v), 3))
                   for name, v in zip(self.vocabulary.names, per_class["IoU"])}
            atomic_json_dump({"metrics": metrics, "iou_per_class": iou, "images": len(results)},
                             Path(self.out_dir) / "seg_per_class.json", indent=1)
        return {key: round(v, 3) for key, v in metrics.items()}


def summary(iou: np.ndarray, acc: np.ndarray, all_acc: float, vocabulary: Vocabulary) -> dict[str, float]:
    """Per-class IoU and accuracy (fractions, NaN for a class absent from both prediction and ground truth)
    -> mIoU, mAcc, aAcc and, with a split, mIoU_base, mIoU_novel and hIoU, in percent."""
    def mean(values: np.ndarray) -> float:
        return float(100 * np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    out = {"mIoU": mean(iou), "mAcc": mean(acc), "aAcc": 100 * all_acc}
    if vocabulary.split is not None:
        for part in ("base", "novel"):
            idx = vocabulary.indices(part)
            out[f"mIoU_{part}"] = mean(iou[idx]) if idx else float("nan")
        out["hIoU"] = harmonic_mean(out["mIoU_base"], out["mIoU_novel"])
    return out
