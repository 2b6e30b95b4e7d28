"""ViLD's training losses that are not torchvision's: the text head's cross-entropy over the columns a
training loss may use, and VL-PLM's per-sample weights of pseudo-labelled boxes."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import boxes as box_ops


def text_cross_entropy(predictor: Any, gt_classes: str, text_emb: Tensor, labels: Tensor,
                       weights: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy of a ViLDPredictor's text head over the columns `gt_classes` allows (background + base for
    ViLD, `training_columns`): the other classes' logits are left out of the softmax, so they get no gradient.
    `labels`: 0 for background, 1 + vocabulary position otherwise. `weights`: one per sampled box (VL-PLM's
    pseudo-label confidences, `pseudo_label_weights`), averaged over the samples."""
    columns = predictor.training_columns(gt_classes)
    position = torch.full((len(predictor.base_mask) + 1,), -1, dtype=torch.long, device=labels.device)
    position[columns] = torch.arange(len(columns), device=labels.device)
    target = position[labels]
    if bool((target < 0).any()):
        outside = sorted({int(v) - 1 for v in labels[target < 0]})
        raise ValueError(f"training boxes are labelled with vocabulary positions {outside}, which are not base "
                         f"classes: ViLD trains over the base classes only (gt_classes='base'). Train on base "
                         f"annotations (the dataset's train_classes='base'), or set gt_classes='all' for an "
                         f"oracle trained with every class or on pseudo-labels of the other classes")
    logits = predictor.logits(text_emb)[:, columns]
    if weights is None:
        return F.cross_entropy(logits, target)
    return (F.cross_entropy(logits, target, reduction="none") * weights).mean()


def pseudo_label_weights(proposals: list[Tensor], targets: list[dict]) -> Optional[Tensor]:
    """Loss weights of the sampled boxes when the targets carry per-box `weights` (pseudo-labels' scores):
    each sample takes the weight of the annotation it overlaps most, background samples included, as VL-PLM
    (detectron2 copies the best-overlap annotation's fields to every proposal); 1 in an image without
    annotations. None when no target has weights."""
    if not any("weights" in t for t in targets):
        return None
    out = []
    for props, t in zip(proposals, targets):
        w = t.get("weights")
        if w is None or not len(t["boxes"]):
            out.append(torch.ones(len(props), device=props.device))
        else:
            out.append(w.to(props.device).float()[box_ops.box_iou(props, t["boxes"]).argmax(dim=1)])
    return torch.cat(out)
