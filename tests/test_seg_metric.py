"""The segmentation metric: mIoU on hand-made maps, base / novel / harmonic mean, ignored and background pixels,
equal to the confusion-matrix metric it replaced."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovclip.vocabulary import builtin_vocabulary, parse_vocabulary
from ovseg.evaluation import SegMetric
from ovseg.labels import BACKGROUND, IGNORE


def _metric(vocabulary, pairs):
    metric = SegMetric(vocabulary)
    metric.process(None, [{"pred": torch.as_tensor(p), "gt": torch.as_tensor(g)} for p, g in pairs])
    return metric.compute_metrics(metric.results)


def test_miou_perfect_and_known_partial_values():
    gt = torch.tensor([[0, 0, 1, 1]])
    assert _metric("a, b, c", [(gt, gt)])["mIoU"] == pytest.approx(100.0)
    m = _metric("a, b, c", [(torch.tensor([[0, 1, 1, 1]]), gt)])
    # class 0: 1 / 2; class 1: 2 / 3; class 2 is in neither and does not count.
    assert m["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2, abs=1e-3)
    assert m["aAcc"] == pytest.approx(75.0)
    assert m["mAcc"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    # A class predicted but absent from the ground truth counts with IoU 0.
    m = _metric("a, b, c", [(torch.tensor([[0, 2]]), torch.tensor([[0, 0]]))])
    assert m["mIoU"] == pytest.approx(100 * (1 / 2 + 0) / 2)


def test_miou_base_novel_harmonic_mean_and_ignored_pixels(tmp_path):
    vocab = parse_vocabulary("a, b, c")
    vocab = type(vocab)(vocab.synonyms, split=("base", "base", "novel"))
    gt = torch.tensor([[0, 1, 2, 2, IGNORE, BACKGROUND]])
    pred = torch.tensor([[0, 1, 2, 0, 1, 2]])
    metric = SegMetric(vocab, out_dir=str(tmp_path))
    metric.process(None, [{"pred": pred, "gt": gt}])
    m = metric.compute_metrics(metric.results)
    assert m["aAcc"] == pytest.approx(75.0)  # 3 of 4: ignored and background pixels are left out
    base, novel = 100 * (1 / 2 + 1) / 2, 50.0
    assert m["mIoU_novel"] == pytest.approx(novel) and m["mIoU_base"] == pytest.approx(base)
    assert m["hIoU"] == pytest.approx(2 * base * novel / (base + novel), abs=1e-3)  # 60.0
    assert json.loads((tmp_path / "seg_per_class.json").read_text())["iou_per_class"] == {"a": 50.0, "b": 100.0,
                                                                                        "c": 50.0}
    with pytest.raises(ValueError, match="differ in size"):
        metric.process(None, [{"pred": pred[:, :3], "gt": gt}])
    with pytest.raises(ValueError, match="predicted labels must be in 0..2"):
        metric.process(None, [{"pred": pred + 1, "gt": gt}])


def _previous_seg_metric(pairs, vocabulary):
    """The confusion-matrix mIoU SegMetric computed before it moved onto mmseg's IoUMetric (reference)."""
    k = len(vocabulary)
    conf = np.zeros((k, k))
    for pred, gt in pairs:
        keep = (gt != IGNORE) & (gt != BACKGROUND)
        conf += np.bincount(gt[keep] * k + pred[keep], minlength=k * k).reshape(k, k)
    tp, gt_count, pred_count = np.diag(conf), conf.sum(1), conf.sum(0)
    union = gt_count + pred_count - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = np.where(union > 0, tp / union, np.nan), np.where(gt_count > 0, tp / gt_count, np.nan)
    out = {"mIoU": 100 * np.nanmean(iou), "mAcc": 100 * np.nanmean(acc), "aAcc": 100 * tp.sum() / conf.sum()}
    for part in ("base", "novel"):
        out[f"mIoU_{part}"] = 100 * np.nanmean(iou[vocabulary.indices(part)])
    return {key: round(float(v), 3) for key, v in out.items()}


def test_seg_metric_equals_the_previous_confusion_matrix_metric():
    """mmseg's IoUMetric under SegMetric gives the numbers of the confusion-matrix implementation it replaced,
    on random predictions over the synthetic vocabulary (ignored and background pixels included)."""
    vocab = builtin_vocabulary("synthetic-shapes")
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(6):
        gt = rng.integers(0, 12, (40, 50))
        gt[rng.random(gt.shape) < 0.1] = IGNORE
        gt[rng.random(gt.shape) < 0.1] = BACKGROUND
        pred = np.where(rng.random(gt.shape) < 0.6, np.clip(gt, 0, 11), rng.integers(0, 12, gt.shape))
        pred[pred == 7] = 8  # a class never predicted
        pairs.append((pred, gt))
    m = _metric(vocab, pairs)
    expected = _previous_seg_metric(pairs, vocab)
    assert {k: m[k] for k in expected} == expected
    b, n = m["mIoU_base"], m["mIoU_novel"]
    assert m["hIoU"] == pytest.approx(2 * b * n / (b + n), abs=1e-3)


def test_seg_metric_sums_images_and_writes_per_class(tmp_path):
    metric = SegMetric("synthetic-shapes", out_dir=str(tmp_path), results_file=str(tmp_path / "pred"))
    gt = torch.full((4, 4), 3)
    metric.process(None, [{"pred": gt.clone(), "gt": gt, "img_path": "x/a.png"},
                          {"pred": torch.zeros(4, 4, dtype=torch.long), "gt": gt, "img_path": "x/b.png"}])
    m = metric.compute_metrics(metric.results)
    assert m["mIoU"] == pytest.approx(100 * (0.5 + 0) / 2)  # star: 16 / 32; circle predicted, absent: 0
    assert m["mIoU_novel"] == pytest.approx(50.0) and m["mIoU_base"] == pytest.approx(0.0)
    assert json.loads((tmp_path / "seg_per_class.json").read_text())["iou_per_class"]["star"] == 50.0
    assert np.asarray(Image.open(tmp_path / "pred" / "a.png")).max() == 3
