"""ViLD's detection post-processing: NMS on the best candidates, the ensemble's scores without autograd, and
scoring by blocks of regions, each against the plain computation it replaces."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import boxes as box_ops

from ovd.models.vild import ENSEMBLE_LAMBDA
from tests.tiny_vild import synthetic_batch, tiny_vild


@pytest.mark.parametrize("top,pre", [(50, 1000), (50, 60), (50, 1), (5, 3), (300, 1000)])
def test_nms_on_the_best_candidates_keeps_the_same_detections(top, pre):
    from ovd.models.vild import nms_top_detections
    g = torch.Generator().manual_seed(top + pre)
    # Clusters of near-duplicate boxes over few classes: NMS removes most, so a small cap must grow.
    centres = torch.rand(40, 2, generator=g) * 200
    n = 3000
    which = torch.randint(0, 40, (n,), generator=g)
    xy = centres[which] + torch.randn(n, 2, generator=g) * 3
    boxes = torch.cat([xy, xy + 30 + torch.randn(n, 2, generator=g)], dim=1)
    scores, labels = torch.rand(n, generator=g), torch.randint(0, 7, (n,), generator=g)
    expected = box_ops.batched_nms(boxes, scores, labels, 0.5)[:top]
    got = nms_top_detections(boxes, scores, labels, 0.5, top, pre)
    assert torch.equal(got, expected)
    assert torch.equal(nms_top_detections(boxes, scores, labels, 0.5, top, None), expected)
    empty = torch.zeros(0)
    assert len(nms_top_detections(torch.zeros(0, 4), empty, empty.long(), 0.5, top, pre)) == 0


def test_box_pre_nms_top_n_is_checked():
    with pytest.raises(ValueError, match="box_pre_nms_top_n"):
        tiny_vild(box_pre_nms_top_n=0)
    assert tiny_vild(box_pre_nms_top_n=None).roi_heads.pre_nms_top_n is None
    assert tiny_vild().roi_heads.pre_nms_top_n == 1000


@pytest.mark.parametrize("image_background", [False, True])
def test_ensemble_scores_without_autograd_are_the_same_numbers(image_background):
    # Inference computes the ensemble in the logits' own buffers (no autograd); training-mode code the
    # functional way: the two must agree to the bit, and with the published power form to rounding.
    from ovd.models.postprocess import ensemble_scores
    model = tiny_vild(classes=50, image_background=image_background).eval()
    heads, pred = model.roi_heads, model.predictor
    pred.classifier.set_text_embeddings(pred.text_embeddings, base_mask=torch.arange(50) % 3 > 0)
    pred.classifier.temperature = 0.03  # some probabilities under the 1e-12 floor, most above
    g = torch.Generator().manual_seed(0)
    t_emb, i_emb = (F.normalize(torch.randn(7, 32, generator=g), dim=-1) for _ in range(2))
    functional = heads.class_scores(t_emb, i_emb)
    with torch.inference_mode():
        inplace = heads.class_scores(t_emb, i_emb)
    assert torch.equal(functional, inplace)
    text = F.softmax(pred.logits(t_emb), -1)[:, 1:]
    image = F.softmax(pred.logits(i_emb), -1)[:, 1:] if image_background else F.softmax(pred.logits(i_emb)[:, 1:], -1)
    lam = torch.where(pred.base_mask, ENSEMBLE_LAMBDA, 1 - ENSEMBLE_LAMBDA)
    published = text.clamp_min(1e-12) ** lam * image.clamp_min(1e-12) ** (1 - lam)
    assert (text < 1e-12).any() and (text > 1e-3).any()
    assert torch.allclose(inplace, published, rtol=1e-5, atol=0)
    assert torch.allclose(ensemble_scores(text, image, pred.base_mask), published, rtol=1e-5, atol=0)


@pytest.mark.parametrize("mode,image_background", [("text", False), ("image", False), ("image", True),
                                                   ("ensemble", False), ("ensemble", True)])
@pytest.mark.parametrize("threshold", ["top", "near the floor", "low"])
def test_scores_by_blocks_of_regions_are_the_thresholded_dense_scores(mode, image_background, threshold):
    # candidate_scores keeps (region, class, score) above the threshold a block of regions at a time (the logits
    # of 128 regions or more from one matmul): the same pairs, in the same order, as torch.where over the dense
    # (N, C) scores, for every block size, an uneven last block and blocks across two matmuls included. The
    # ensemble thresholds in log space above about 1e-4: "top", 5e-4 over a score (which its log-space cut keeps
    # and the exact comparison after it drops); "near the floor", 2e-4, with probabilities under the 1e-12 floor
    # in the same rows (the floor cannot lift them over it); "low", 1e-5, where it can (the plain path runs).
    from ovd.models.postprocess import MATMUL_ROWS, candidate_scores, log_space_threshold
    model = tiny_vild(classes=50, image_background=image_background).eval()
    heads, pred = model.roi_heads, model.predictor
    pred.classifier.set_text_embeddings(pred.text_embeddings, base_mask=torch.arange(50) % 3 > 0)
    pred.classifier.temperature = 0.05 if threshold == "top" else 0.02
    g = torch.Generator().manual_seed(0)
    n = MATMUL_ROWS + 45
    t_emb, i_emb = (F.normalize(torch.randn(n, 32, generator=g), dim=-1) for _ in range(2))
    heads.inference_mode = mode
    with torch.no_grad():
        dense = heads.class_scores(t_emb, i_emb)
        if threshold == "top":
            ranked = dense.flatten().sort(descending=True).values
            thresh = next(t for t in (float(v) * (1 + 5e-4) for v in ranked[40:400])
                          if ((dense - t).abs() / t).min() > 1e-4 and (dense > t).sum() >= 10)
        else:
            thresh = gap_threshold(dense, 2e-4 if threshold == "near the floor" else 1e-5)
        assert ((dense - thresh).abs() / thresh).min() > 1e-4  # no score within rounding of it
        cut = log_space_threshold(thresh)
        assert (cut is None) == (threshold == "low")
        if mode == "ensemble" and threshold == "top":  # a pair between the cut and log(thresh)
            assert ((dense.log() > cut) & (dense <= thresh)).any()
        if mode == "ensemble" and threshold != "top":  # probabilities under the floor
            text = F.softmax(pred.logits(t_emb), -1)[:, 1:]
            assert (text < 1e-12).any() and (dense > thresh).any()
            assert ((dense > thresh) & (text < 1e-12)).any() == (threshold == "low")
        idx, labels = torch.where(dense > thresh)
        for block_bytes in (None, 4 * 51 * 5, 4 * 51 * 7, 1, 1 << 20):  # one block, 5 / 7 / 1 rows, one block
            got = candidate_scores(pred, t_emb, i_emb, mode, image_background, thresh, block_bytes)
            assert torch.equal(got[0], idx) and torch.equal(got[1], labels)
            assert torch.allclose(got[2], dense[idx, labels], rtol=1e-5, atol=0)  # matmul rounding, x |logit|
        for block_bytes in (None, 4 * 51 * 5):
            empty = candidate_scores(pred, t_emb[:0], i_emb[:0], mode, image_background, thresh, block_bytes)
            assert [tuple(t.shape) for t in empty] == [(0,), (0,), (0,)]
    # With autograd on (a model in eval mode outside no_grad) nothing is written in place: scores backpropagate.
    t_grad, i_grad = (e.clone().requires_grad_() for e in (t_emb, i_emb))
    got = candidate_scores(pred, t_grad, i_grad, mode, image_background, thresh, 4 * 51 * 5)
    assert torch.equal(got[0], idx) and len(idx) > 0
    got[2].sum().backward()
    assert (i_grad if mode == "image" else t_grad).grad is not None


def gap_threshold(scores, around: float) -> float:
    """A threshold near `around` in the widest gap between scores (of the 40 around it), far from any score."""
    v = scores.flatten().sort().values.double()
    k = int(torch.searchsorted(v, torch.tensor(around, dtype=v.dtype)))
    window = v[max(k - 20, 0):k + 21]
    ratios = window[1:] / window[:-1].clamp_min(1e-30)
    j = int(ratios.argmax())
    return float((window[j] * window[j + 1]).sqrt())


def test_log_space_threshold_by_hand():
    # A probability under the 1e-12 floor caps an ensemble log-score at min(lam, 1 - lam) * log(1e-12) =
    # log(1e-12) / 3 = -9.2103 (lam = 2/3), so log-space thresholding needs log(thresh) - 1e-3 > -9.2093.
    from ovd.models.postprocess import log_space_threshold
    assert log_space_threshold(1e-3) == pytest.approx(-6.9078 - 1e-3, abs=1e-4)
    assert log_space_threshold(2e-4) == pytest.approx(-8.5172 - 1e-3, abs=1e-4)
    assert log_space_threshold(1e-4) is None and log_space_threshold(0.0) is None
    assert log_space_threshold(1e-3, lam=0.5) is not None and log_space_threshold(1e-6, lam=0.5) is None


def test_detections_are_the_same_with_dense_scores_and_by_blocks():
    model = tiny_vild(classes=50).eval()
    model.roi_heads.score_thresh = 0.0
    images, _ = synthetic_batch()
    with torch.no_grad():
        model.roi_heads.score_block_bytes = None
        dense = model(images)
        model.roi_heads.score_block_bytes = 4 * 51 * 3
        blocks = model(images)
    assert len(dense) == len(blocks) == len(images) and len(dense[0]["boxes"]) > 0
    for a, b in zip(dense, blocks):
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["boxes"], b["boxes"])
        assert torch.allclose(a["scores"], b["scores"], rtol=1e-5, atol=0)
