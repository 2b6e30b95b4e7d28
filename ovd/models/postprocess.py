"""ViLD's detection scoring and post-processing: the ensemble of its two branches, and NMS on the best
candidates of large vocabularies."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import boxes as box_ops

ENSEMBLE_LAMBDA = 2.0 / 3.0
FLOOR, LOG_FLOOR = 1e-12, math.log(1e-12)  # the probability floor of the ensemble's geometric mean
PRE_NMS_TOP_N = 1000  # candidates per image NMS looks at first (nms_top_detections: the output is the same)


def ensemble_scores(text_probs: Tensor, image_probs: Tensor, base_mask: Tensor, lam: float = ENSEMBLE_LAMBDA) -> Tensor:
    """ViLD-ensemble: geometric mean weighting the text branch by lam on base classes and the image
    branch by lam on novel ones (class columns only, background removed):
    text ** lam_c * image ** (1 - lam_c), each probability floored at 1e-12."""
    return ensemble_from_log_probs(text_probs.clamp_min(FLOOR).log(), image_probs.clamp_min(FLOOR).log(), base_mask,
                                   lam)


def ensemble_from_log_probs(text_log_probs: Tensor, image_log_probs: Tensor, base_mask: Tensor,
                            lam: float = ENSEMBLE_LAMBDA, inplace: bool = False) -> Tensor:
    """`ensemble_scores` from log-probabilities (`log_probs`): exp(lam_c * log text + (1 - lam_c) * log
    image), one exp over the (N, C) scores where the power form takes two logs and two exps. `inplace`
    writes into the inputs (no autograd; the same numbers): at 21k classes most of the cost is allocating
    fresh (N, C) tensors."""
    lam_text = torch.where(base_mask, lam, 1 - lam).to(text_log_probs.dtype)
    if inplace:
        return image_log_probs.clamp_min_(LOG_FLOOR).lerp_(text_log_probs.clamp_min_(LOG_FLOOR), lam_text).exp_()
    return torch.lerp(image_log_probs.clamp_min(LOG_FLOOR), text_log_probs.clamp_min(LOG_FLOOR), lam_text).exp()


def log_probs(logits: Tensor) -> Tensor:
    """Log-softmax over the last axis: PyTorch's fused kernel, two passes over the (N, C) logits where
    logits - logsumexp(logits) takes five (at 21k classes 1.9 vs 3.7 ms per branch); equal to it within
    float rounding."""
    return F.log_softmax(logits, dim=-1)


def nms_top_detections(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, top: int,
                       pre_nms_top_n: Optional[int] = PRE_NMS_TOP_N) -> Tensor:
    """Indices of the first `top` detections batched (per-class) NMS keeps, best first: exactly
    `batched_nms(...)[:top]`, computed on the `pre_nms_top_n` best-scoring candidates when that is enough.

    A candidate is suppressed only by a higher-scoring box of its class, so NMS decides the same for the
    best k candidates whether or not the others are there; when fewer than `top` of them survive, k grows
    (x4) until `top` do or every candidate is in. With large vocabularies there are thousands of candidates
    per image and torchvision's CPU batched_nms loops over their classes (16-18 ms at 1203 classes); the
    best 1000 usually suffice. None: NMS over every candidate.
    """
    n = len(scores)
    k = n if pre_nms_top_n is None else pre_nms_top_n
    while k < n:
        subset = scores.topk(k).indices
        keep = box_ops.batched_nms(boxes[subset], scores[subset], labels[subset], iou_threshold)
        if len(keep) >= top:
            return subset[keep[:top]]
        k *= 4
    return box_ops.batched_nms(boxes, scores, labels, iou_threshold)[:top]
