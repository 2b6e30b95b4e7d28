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
MATMUL_ROWS = 128  # candidate_scores: the fewest regions whose logits one matmul computes
LOG_CUT_MARGIN = 1e-3  # ensemble_candidates: how far under log(score_thresh) its log-space cut lies


def class_scores(predictor: Any, text_emb: Tensor, image_emb: Optional[Tensor], mode: str,
                 image_background: bool = False, weights: Optional[Tensor] = None) -> Tensor:
    """(N, C) class scores of region embeddings by inference `mode` ('text', 'image' or 'ensemble'), from a
    ViLDPredictor's `logits` (background first) and `base_mask`. The text branch's softmax includes the
    background (then dropped); the image branch's is over the classes alone unless `image_background`.
    `weights`: the classifier's `weights()` already computed."""
    check_mode(mode)
    text, image = branch_logits(predictor, text_emb, image_emb, mode, image_background, weights)
    return scores_from_logits(text, image, mode, image_background, predictor.base_mask)


def check_mode(mode: str) -> None:
    if mode not in ("text", "image", "ensemble"):
        raise ValueError(f"inference_mode must be text, image or ensemble, not '{mode}'")


def branch_logits(predictor: Any, text_emb: Tensor, image_emb: Optional[Tensor], mode: str, image_background: bool,
                  weights: Optional[Tensor] = None) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """The logits `mode` scores from: the text branch's (background first; None in 'image' mode) and the image
    branch's (None in 'text' mode; background first only if `image_background`: without it the matmul is
    against the classes' rows alone, so that its logits come out contiguous, not as a slice to copy)."""
    w = predictor.classifier.weights() if weights is None else weights
    text = None if mode == "image" else predictor.logits(text_emb, w)
    image = None if mode == "text" else predictor.logits(image_emb, w if image_background else w[1:])
    return text, image


def scores_from_logits(text: Optional[Tensor], image: Optional[Tensor], mode: str, image_background: bool,
                       base_mask: Tensor) -> Tensor:
    """`class_scores` from `branch_logits`."""
    if mode == "text":
        return F.softmax(text, dim=-1)[:, 1:]
    if mode == "image":
        return F.softmax(image, dim=-1)[:, 1:] if image_background else F.softmax(image, dim=-1)
    # The ensemble mixes log-probabilities; without autograd in their own (fresh) buffers.
    image = log_probs(image)[:, 1:] if image_background else log_probs(image)
    return ensemble_from_log_probs(log_probs(text)[:, 1:], image, base_mask, inplace=not torch.is_grad_enabled())


def candidate_scores(predictor: Any, text_emb: Tensor, image_emb: Optional[Tensor], mode: str,
                     image_background: bool, score_thresh: float, block_bytes: Optional[int] = SCORE_BLOCK_BYTES
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """(region, class, score) of every pair whose `class_scores` exceed `score_thresh`, in row-major order:
    `torch.where` over the (N, C) scores, computed a block of regions at a time.

    Each block's (rows, C) log-probabilities and scores take about `block_bytes` (None: one block), so that
    at large vocabularies they stay in cache instead of fresh (N, C) tensors in memory; the logits of
    `MATMUL_ROWS` regions or more come from one matmul per branch (a block of a few rows would read every
    class's embedding again). The ensemble thresholds in log space when `score_thresh` allows it (above
    about 1e-4, without autograd; `ensemble_candidates`): the same pairs and scores, two clamps and an exp
    over every pair saved. For 1000 regions at 21k classes, blocks and one block take the same time (one
    block gained most from the log-space threshold), with 80-98 MiB of peak memory growth against 351-358
    MiB (benchmarks/vocabulary.py --part scoring). Scores are per region, so none of this changes a number
    beyond the matmul's float rounding. One block when traced (the block count would be frozen into the
    graph).
    """
    check_mode(mode)
    n, classes = text_emb.shape[0], predictor.base_mask.numel()
    if torch.jit.is_tracing():
        scores = class_scores(predictor, text_emb, image_emb, mode, image_background)
        idx, labels = torch.where(scores > score_thresh)
        return idx, labels, scores[idx, labels]
    rows = max(1, n) if block_bytes is None else max(1, block_bytes // (4 * (classes + 1)))
    chunk = rows * -(-MATMUL_ROWS // rows)  # regions per matmul: whole blocks, MATMUL_ROWS or more
    weights = predictor.classifier.weights()  # concatenated once, not per block
    # in place, so not under autograd (a model in eval mode may still record a graph)
    log_space = mode == "ensemble" and not torch.is_grad_enabled() and log_space_threshold(score_thresh) is not None
    found = []
    for start in range(0, n, chunk):
        text, image = branch_logits(predictor, text_emb[start:start + chunk],
                                    None if image_emb is None else image_emb[start:start + chunk], mode,
                                    image_background, weights)
        for first in range(0, min(chunk, n - start), rows):
            t = None if text is None else text[first:first + rows]
            i = None if image is None else image[first:first + rows]
            if log_space:
                idx, labels, s = ensemble_candidates(t, i, image_background, predictor.base_mask, score_thresh)
            else:
                scores = scores_from_logits(t, i, mode, image_background, predictor.base_mask)
                idx, labels = torch.where(scores > score_thresh)
                s = scores[idx, labels]
            found.append((idx + start + first, labels, s))
    if not found:
        empty = text_emb.new_zeros(0, dtype=torch.long)
        return empty, empty.clone(), text_emb.new_zeros(0)
    if len(found) == 1:
        return found[0]
    idx, labels, scores = zip(*found)
    return torch.cat(idx), torch.cat(labels), torch.cat(scores)


def log_space_threshold(score_thresh: float, lam: float = ENSEMBLE_LAMBDA) -> Optional[float]:
    """The log-space cut `ensemble_candidates` filters with (a little under log(score_thresh), so that it
    keeps every pair above the threshold, float rounding included), or None when the threshold is too low
    for it: a probability under the floor (1e-12) caps a pair's log-score at min(lam, 1 - lam) * log(1e-12)
    (about log(1e-4)), and the cut must lie above that for the floor never to matter."""
    if score_thresh <= 0:
        return None
    cut = math.log(score_thresh) - LOG_CUT_MARGIN
    return cut if cut > min(lam, 1 - lam) * LOG_FLOOR + LOG_CUT_MARGIN else None


def ensemble_candidates(text_logits: Tensor, image_logits: Tensor, image_background: bool, base_mask: Tensor,
                        score_thresh: float, lam: float = ENSEMBLE_LAMBDA) -> tuple[Tensor, Tensor, Tensor]:
    """(row, class, score) of the ensemble's pairs above `score_thresh` (as `scores_from_logits` thresholded),
    thresholding in log space first: the weighted log-probabilities (`ensemble_from_log_probs` without the
    floor) are cut at `log_space_threshold` and only the pairs kept are exponentiated and compared with
    `score_thresh`. A pair above the cut has no probability under the floor (see `log_space_threshold`), so
    its log-score is the floored one, the same number; at 21k classes two clamps and an exp over every pair
    are saved. Requires `log_space_threshold(score_thresh)` not None."""
    cut = log_space_threshold(score_thresh, lam)
    if cut is None:
        raise ValueError(f"score threshold {score_thresh} is too low to threshold the ensemble in log space")
    image = log_probs(image_logits)[:, 1:] if image_background else log_probs(image_logits)
    text = log_probs(text_logits)[:, 1:]
    mixed = image.lerp_(text, torch.where(base_mask, lam, 1 - lam).to(text.dtype))
    idx, labels = torch.where(mixed > cut)
    scores = mixed[idx, labels].exp_()
    keep = scores > score_thresh
    return idx[keep], labels[keep], scores[keep]


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
