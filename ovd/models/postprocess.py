"""ViLD's detection scoring and post-processing: class scores by inference mode (the ensemble of its two
branches), and the detections kept per image (NMS on the best candidates of large vocabularies)."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import boxes as box_ops

ENSEMBLE_LAMBDA = 2.0 / 3.0
FLOOR, LOG_FLOOR = 1e-12, math.log(1e-12)  # the probability floor of the ensemble's geometric mean
PRE_NMS_TOP_N = 1000  # candidates per image NMS looks at first (nms_top_detections: the output is the same)
SCORE_BLOCK_BYTES = 2 << 20  # a block of regions' (rows, C) scores when scoring (candidate_scores): about 2 L2 caches


def class_scores(predictor: Any, text_emb: Tensor, image_emb: Optional[Tensor], mode: str,
                 image_background: bool = False, weights: Optional[Tensor] = None) -> Tensor:
    """(N, C) class scores of region embeddings by inference `mode` ('text', 'image' or 'ensemble'), from a
    ViLDPredictor's `logits` (background first) and `base_mask`. The text branch's softmax includes the
    background (then dropped); the image branch's is over the classes alone unless `image_background`.
    `weights`: the classifier's `weights()` already computed."""
    if mode not in ("text", "image", "ensemble"):
        raise ValueError(f"inference_mode must be text, image or ensemble, not '{mode}'")
    if mode == "text":
        return F.softmax(predictor.logits(text_emb, weights), dim=-1)[:, 1:]
    image_logits = predictor.logits(image_emb, weights)
    if mode == "image":
        return F.softmax(image_logits, dim=-1)[:, 1:] if image_background else F.softmax(image_logits[:, 1:], dim=-1)
    # The ensemble mixes log-probabilities; without autograd in their own (fresh) buffers.
    image = log_probs(image_logits)[:, 1:] if image_background else log_probs(image_logits[:, 1:])
    text = log_probs(predictor.logits(text_emb, weights))[:, 1:]
    return ensemble_from_log_probs(text, image, predictor.base_mask, inplace=not torch.is_grad_enabled())


def candidate_scores(predictor: Any, text_emb: Tensor, image_emb: Optional[Tensor], mode: str,
                     image_background: bool, score_thresh: float, block_bytes: Optional[int] = SCORE_BLOCK_BYTES
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """(region, class, score) of every pair whose `class_scores` exceed `score_thresh`, in row-major order:
    exactly `torch.where` over the (N, C) scores, computed a block of regions at a time.

    Each block's (rows, C) logits, log-probabilities and scores take about `block_bytes` (None: one block),
    so that at large vocabularies they stay in cache instead of four fresh (N, C) tensors in memory: for
    1000 regions at 21k classes 1.8-1.9x faster, with 28-41 MiB of peak memory growth against 353-383 MiB
    (benchmarks/vocabulary.py --part scoring). Scores are per region, so blocking changes no number beyond the matmul's float
    rounding. One block when traced (the block count would be frozen into the graph).
    """
    n = text_emb.shape[0]
    rows = n if block_bytes is None else max(1, block_bytes // (4 * (predictor.base_mask.numel() + 1)))
    if torch.jit.is_tracing() or rows >= n:
        blocks = [(0, text_emb, image_emb)]
    else:
        blocks = [(start, text_emb[start:start + rows], None if image_emb is None else image_emb[start:start + rows])
                  for start in range(0, n, rows)]
    weights = predictor.classifier.weights() if len(blocks) > 1 else None  # concatenated once, not per block
    found = []
    for start, text, image in blocks:
        scores = class_scores(predictor, text, image, mode, image_background, weights)
        idx, labels = torch.where(scores > score_thresh)
        found.append((idx + start, labels, scores[idx, labels]))
    if len(found) == 1:
        return found[0]
    idx, labels, scores = zip(*found)
    return torch.cat(idx), torch.cat(labels), torch.cat(scores)


def select_detections(boxes: Tensor, candidates: tuple[Tensor, Tensor, Tensor], image_shape: tuple[int, int],
                      nms_thresh: float, detections_per_img: int, pre_nms_top_n: Optional[int] = PRE_NMS_TOP_N
                      ) -> dict[str, Tensor]:
    """One image's detections from its (N, 4) decoded boxes and its (region, class, score) `candidates`
    above the score threshold (`candidate_scores`): boxes clipped to the image, tiny boxes dropped, then
    per-class NMS (`nms_top_detections`)."""
    idx, labels, s = candidates
    b = box_ops.clip_boxes_to_image(boxes[idx], image_shape)
    keep = box_ops.remove_small_boxes(b, 1e-2)
    b, s, labels = b[keep], s[keep], labels[keep]
    keep = nms_top_detections(b, s, labels, nms_thresh, detections_per_img, pre_nms_top_n)
    return {"boxes": b[keep], "scores": s[keep], "labels": labels[keep]}


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
