"""DETR's Hungarian matching and set losses with Deformable DETR's focal classification (yuhangzang/OV-DETR:
models/matcher.py, models/set_criterion.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def focal_class_cost(prob: Tensor) -> Tensor:
    """Deformable DETR's classification matching cost from sigmoid probabilities: focal loss of calling
    it positive minus that of calling it negative (alpha 0.25, gamma 2)."""
    neg = (1 - FOCAL_ALPHA) * prob ** FOCAL_GAMMA * -(1 - prob + 1e-8).log()
    pos = FOCAL_ALPHA * (1 - prob) ** FOCAL_GAMMA * -(prob + 1e-8).log()
    return pos - neg


def match(class_cost: Tensor, pred_boxes: Tensor, gt_boxes: Tensor, weights: dict[str, float]) -> tuple[Tensor, Tensor]:
    """Hungarian assignment of (Q,) predictions to (G,) ground-truth boxes (both cxcywh, normalised) under
    weights['class'] x class_cost (Q, G) + weights['bbox'] x L1 + weights['giou'] x -GIoU; returns
    (prediction indices, ground-truth indices), min(Q, G) pairs."""
    if len(gt_boxes) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    with torch.no_grad():
        cost = (weights["class"] * class_cost + weights["bbox"] * torch.cdist(pred_boxes, gt_boxes, p=1)
                - weights["giou"] * generalized_box_iou(box_convert(pred_boxes, "cxcywh", "xyxy"),
                                                        box_convert(gt_boxes, "cxcywh", "xyxy")))
    rows, cols = linear_sum_assignment(cost.float().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def box_losses(pred: Tensor, gt: Tensor, num_boxes: float) -> tuple[Tensor, Tensor]:
    """DETR's L1 and GIoU losses of matched (N, 4) cxcywh boxes, summed and divided by `num_boxes`."""
    l1 = F.l1_loss(pred, gt, reduction="sum") / num_boxes
    giou = torch.diag(generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")))
    return l1, (1 - giou).sum() / num_boxes


def focal_loss(logits: Tensor, targets: Tensor, num_boxes: float) -> Tensor:
    """Deformable DETR's sigmoid focal classification loss, summed over queries and classes and divided by
    `num_boxes` (the reference's mean over queries times their number)."""
    return sigmoid_focal_loss(logits, targets, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum") / num_boxes
