"""Teacher box pseudo-labels for novel classes, as VL-PLM (Zhao et al., ECCV 2022; xiaofeng94/VL-PLM,
tools/utils.py and gen_PLs.py) computes them, with no detector inside: the boxes and their objectness come
from outside (a base-trained detector's RPN, `tools/proposals.py`).

For each candidate box (width and height >= `min_size` pixels once clipped to the image) the teacher's
region embedding (crops at 1x and 1.5x, each normalised, averaged, normalised: `ovclip.regions`) is scored
against the text embeddings of the classes to label only (the novel classes by default): a softmax at
`temperature` over those classes, top-1. The score fuses that probability with the box's objectness,
`objectness_weight * objectness + (1 - objectness_weight) * probability`; boxes scoring above `score_thr`
(strictly) are kept, then non-maximum suppression per class at `nms_iou`. VL-PLM's values: top 100
proposals, 0.01, 0.5, 0.8, 0.6, 5 pixels.

One step the reference does not take, asked for by this project: a box overlapping a ground-truth box of
another class of the vocabulary (a base object) at IoU >= `base_overlap_iou` is dropped before the NMS, so
that no object gets both its base label and a pseudo-label. `base_overlap_iou=None` is VL-PLM's exact
recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_iou

from .coco import read_json
from .io import as_image_tensor
from .options import ConfigError
from .regions import clip_boxes, region_embeddings
from .teacher import Teacher
from .vocabulary import Vocabulary, VocabularyError

# VL-PLM's settings (gen_PLs.py, tools/utils.py); base_overlap_iou is this project's addition (see above).
LABEL_DEFAULTS: dict[str, Any] = {"temperature": 0.01, "objectness_weight": 0.5, "score_thr": 0.8, "nms_iou": 0.6,
                                  "min_size": 5.0, "base_overlap_iou": 0.5, "max_per_image": None}


@dataclass
class PseudoBoxes:
    """One image's pseudo-labels, best first: xyxy boxes in its pixels, fused scores, labels as positions in
    the vocabulary, and the two parts of each score (the teacher's class probability and the objectness)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    class_probs: torch.Tensor
    objectness: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)


def labelled_classes(vocabulary: Vocabulary, classes: "str | Sequence[str]" = "novel") -> list[int]:
    """Positions of the classes to pseudo-label: 'novel' (default), 'base' or 'all' of the vocabulary's
    split, or a list of class names (each must be in the vocabulary)."""
    if isinstance(classes, str):
        if classes == "all":
            return list(range(len(vocabulary)))
        if classes not in ("novel", "base"):
            raise ConfigError(f"classes must be 'novel', 'base', 'all' or a list of class names, not '{classes}'")
        positions = vocabulary.indices(classes)
    else:
        positions = sorted({vocabulary.index(str(name)) for name in classes})
    if not positions:
        raise VocabularyError(f"no class to pseudo-label: '{classes}' selects none of vocabulary "
                              f"'{vocabulary.name}'")
    return positions


def check_label_settings(settings: dict) -> dict:
    """The labelling settings with their defaults; unknown keys and out-of-range values refused by name."""
    unknown = set(settings) - set(LABEL_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown pseudo-label setting(s) {sorted(unknown)}; allowed: {sorted(LABEL_DEFAULTS)}")
    s = {**LABEL_DEFAULTS, **settings}
    if not s["temperature"] > 0:
        raise ConfigError(f"pseudo.temperature must be > 0, not {s['temperature']}")
    for key in ("objectness_weight", "nms_iou"):
        if not 0 <= s[key] <= 1:
            raise ConfigError(f"pseudo.{key} must be in [0, 1], not {s[key]}")
    if s["base_overlap_iou"] is not None and not 0 < s["base_overlap_iou"] <= 1:
        raise ConfigError(f"pseudo.base_overlap_iou must be in (0, 1] or None, not {s['base_overlap_iou']}")
    if s["max_per_image"] is not None and s["max_per_image"] < 1:
        raise ConfigError(f"pseudo.max_per_image must be >= 1 or None, not {s['max_per_image']}")
    return s


def label_regions(boxes: torch.Tensor, objectness: torch.Tensor, embeddings: torch.Tensor, text: torch.Tensor,
                  classes: Sequence[int], base_boxes: Optional[torch.Tensor] = None,
                  valid: Optional[torch.Tensor] = None, **settings) -> PseudoBoxes:
    """Pseudo-labels from boxes already embedded by the teacher (unit rows of `embeddings`, zero rows where
    `valid` is False) and the (C, D) unit text embeddings of the whole vocabulary; only the `classes`
    (vocabulary positions) are labelled, and the softmax runs over them alone. `base_boxes`: the image's
    ground-truth boxes of the other classes. `settings`: LABEL_DEFAULTS' keys."""
    s = check_label_settings(settings)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    objectness = torch.as_tensor(objectness, dtype=torch.float32).reshape(-1)
    classes_t = torch.as_tensor(list(classes), dtype=torch.long)
    if len(objectness) != len(boxes) or len(embeddings) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes need as many objectness scores and embeddings, got "
                         f"{len(objectness)} and {len(embeddings)}")
    keep = (boxes[:, 2] - boxes[:, 0] >= s["min_size"]) & (boxes[:, 3] - boxes[:, 1] >= s["min_size"])
    if valid is not None:
        keep &= torch.as_tensor(valid, dtype=torch.bool)
    logits = embeddings.float() @ text[classes_t].float().T / s["temperature"]
    probs, best = F.softmax(logits, dim=-1).max(dim=-1)
    scores = s["objectness_weight"] * objectness + (1 - s["objectness_weight"]) * probs
    keep &= scores > s["score_thr"]
    if base_boxes is not None and len(base_boxes) and s["base_overlap_iou"] is not None:
        overlap = box_iou(boxes, torch.as_tensor(base_boxes, dtype=torch.float32).reshape(-1, 4)).amax(dim=1)
        keep &= overlap < s["base_overlap_iou"]
    idx = keep.nonzero().flatten()
    labels = classes_t[best[idx]]
    order = idx[batched_nms(boxes[idx], scores[idx], labels, s["nms_iou"])]
    if s["max_per_image"] is not None:
        order = order[: s["max_per_image"]]
    return PseudoBoxes(boxes[order], scores[order], classes_t[best[order]], probs[order], objectness[order])


def pseudo_boxes(teacher: Teacher, image: Any, boxes: torch.Tensor, objectness: torch.Tensor, text: torch.Tensor,
                 classes: Sequence[int], base_boxes: Optional[torch.Tensor] = None,
                 scales: Sequence[float] = (1.0, 1.5), batch_size: int = 64, **settings) -> PseudoBoxes:
    """Pseudo-label one image: its candidate boxes (xyxy pixels) and their objectness in [0, 1] are clipped
    to the image, the ones too small to keep are not embedded, the rest are embedded by the teacher and
    labelled by `label_regions`."""
    s = check_label_settings(settings)
    img = as_image_tensor(image)
    clipped, ok = clip_boxes(torch.as_tensor(boxes, dtype=torch.float32), img.shape[-1], img.shape[-2])
    ok &= (clipped[:, 2] - clipped[:, 0] >= s["min_size"]) & (clipped[:, 3] - clipped[:, 1] >= s["min_size"])
    objectness = torch.as_tensor(objectness, dtype=torch.float32).reshape(-1)[ok]
    if not ok.any():
        empty = torch.zeros(0)
        return PseudoBoxes(torch.zeros(0, 4), empty, torch.zeros(0, dtype=torch.long), empty, empty)
    r = region_embeddings(teacher, img, clipped[ok], scales, batch_size)
    return label_regions(r.boxes, objectness, r.embeddings, text.cpu(), classes, base_boxes, r.valid, **s)


def match_quality(pseudo: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  truth: dict[Any, tuple[np.ndarray, np.ndarray]], iou: float = 0.5) -> dict[str, Any]:
    """Precision and recall of pseudo-labels against withheld ground truth, overall and per class.

    `pseudo`: image id -> (xyxy boxes, scores, labels); `truth`: image id -> (xyxy boxes, labels), the
    ground truth of the labelled classes only. A pseudo-label is right when it overlaps an unmatched
    ground-truth box of its class at IoU >= `iou` (pseudo-labels taken best first, each ground-truth box
    matched once, as in detection evaluation)."""
    hits: dict[int, list[int]] = {}  # class -> [right pseudo-labels, pseudo-labels, matched truths, truths]
    for image_id in set(pseudo) | set(truth):
        p_boxes, p_scores, p_labels = pseudo.get(image_id, (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)))
        t_boxes, t_labels = truth.get(image_id, (np.zeros((0, 4)), np.zeros(0, int)))
        for c in set(np.asarray(p_labels).tolist()) | set(np.asarray(t_labels).tolist()):
            pm, tm = np.asarray(p_labels) == c, np.asarray(t_labels) == c
            pb = torch.as_tensor(np.asarray(p_boxes, np.float32)[pm]).reshape(-1, 4)
            tb = torch.as_tensor(np.asarray(t_boxes, np.float32)[tm]).reshape(-1, 4)
            order = np.argsort(-np.asarray(p_scores)[pm], kind="stable")
            ious = box_iou(pb[order], tb) if len(pb) and len(tb) else torch.zeros(len(pb), len(tb))
            taken = torch.zeros(len(tb), dtype=torch.bool)
            right = 0
            for row in ious:
                row = torch.where(taken, torch.tensor(-1.0), row)
                if len(row) and row.max() >= iou:
                    taken[row.argmax()] = True
                    right += 1
            h = hits.setdefault(int(c), [0, 0, 0, 0])
            h[0] += right
            h[1] += len(pb)
            h[2] += int(taken.sum())
            h[3] += len(tb)
    total = [sum(h[i] for h in hits.values()) for i in range(4)]

    def summary(h: list[int]) -> dict[str, float]:
        return {"precision": 100.0 * h[0] / h[1] if h[1] else float("nan"),
                "recall": 100.0 * h[2] / h[3] if h[3] else float("nan"), "pseudo_labels": h[1], "truths": h[3]}
    return {**summary(total), "per_class": {c: summary(h) for c, h in sorted(hits.items())}}


def annotation_quality(pseudo_file: "str | Path", truth_file: "str | Path", categories: Iterable[int] = (),
                       iou: float = 0.5) -> dict[str, Any]:
    """`match_quality` of a pseudo-annotation file (tools/pseudo_boxes.py's) against the ground truth of a
    COCO-format file, restricted to the labelled classes: the category ids the pseudo-labels use, and
    `categories` (e.g. every novel class, so that a class never labelled counts in the recall)."""
    pseudo = read_json(pseudo_file)["annotations"]
    labelled = {a["category_id"] for a in pseudo} | set(categories)
    truth = [a for a in read_json(truth_file)["annotations"] if a["category_id"] in labelled]

    def by_image(anns: list[dict], scored: bool) -> dict:
        out: dict = {}
        for a in anns:
            x, y, w, h = a["bbox"]
            out.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], a.get("score", 1.0), a["category_id"]))
        return {k: (np.array([b for b, _, _ in v], np.float32).reshape(-1, 4),
                    *((np.array([s for _, s, _ in v]),) if scored else ()), np.array([c for _, _, c in v]))
                for k, v in out.items()}
    return match_quality(by_image(pseudo, True), by_image(truth, False), iou)
