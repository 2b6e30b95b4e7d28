"""ViLD's RoIAlign (its backward over all channels at once, its forward split by channel) gives torchvision's
outputs and gradients bit for bit."""
from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

import ovd.models.roi_align as roi_align
from ovd.models.roi_align import FastMultiScaleRoIAlign, roi_align_backward


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def features_and_boxes(levels, channels):
    g = torch.Generator().manual_seed(0)
    feats = OrderedDict((str(i), torch.randn(2, channels, 64 >> i, 80 >> i, generator=g)) for i in range(levels))
    boxes = []
    for _ in range(2):  # small and large boxes: every FPN level gets some
        xy = torch.rand(40, 2, generator=g) * 200
        wh = torch.rand(40, 2, generator=g) ** 2 * 250 + 2
        large = torch.tensor([[0.0, 0.0, 300.0, 250.0], [10.0, 5.0, 290.0, 240.0]])  # FPN level 2
        boxes.append(torch.cat([torch.cat([xy, (xy + wh).clamp(max=250)], 1), large]))
    return feats, boxes


@pytest.mark.parametrize("levels,channels,n_threads,sampling", [(4, 16, 2, 2), (1, 7, 3, 2), (3, 5, 2, 0),
                                                                (4, 16, 1, 2), (2, 9, 1, 0), (3, 20, 1, 0)])
def test_pooler_equals_torchvision_to_the_bit(threads, levels, channels, n_threads, sampling):
    threads(n_threads)
    feats, boxes = features_and_boxes(levels, channels)
    names, shapes = list(feats), [(256, 320), (256, 320)]
    out = {}
    for cls in (MultiScaleRoIAlign, FastMultiScaleRoIAlign):
        x = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
        pooled = cls(names, (7, 7), sampling)(x, boxes, shapes)
        (pooled * torch.linspace(-1, 1, pooled.numel()).view_as(pooled)).sum().backward()
        out[cls] = (pooled.detach(), [v.grad for v in x.values()])
    (a, grads_a), (b, grads_b) = out.values()
    # boxes up to ~320 px reach the first three FPN levels (torchvision's LevelMapper: level 3 from 448 px)
    assert a.abs().sum() > 0 and sum(bool(g.abs().sum() > 0) for g in grads_a) == min(levels, 3)
    assert torch.equal(a, b)
    assert all(torch.equal(ga, gb) for ga, gb in zip(grads_a, grads_b))


def test_without_grad_and_with_no_boxes(threads):
    threads(2)
    feats, boxes = features_and_boxes(4, 8)
    pool = FastMultiScaleRoIAlign(list(feats), 7, 2)
    with torch.no_grad():
        assert torch.equal(pool(feats, boxes, [(256, 320)] * 2),
                           MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, [(256, 320)] * 2))
        assert pool(feats, [torch.zeros(0, 4), torch.zeros(0, 4)], [(256, 320)] * 2).shape == (0, 8, 7, 7)


def test_a_pool_from_another_process_is_not_used(threads):
    # A forked child holds the parent's pool object without its threads (waiting on it would hang): a pool
    # made by another process id is replaced. (Torch's own OpenMP ops hang in such a child on this stack,
    # so the fork itself is not run here.)
    threads(2)
    feats, boxes = features_and_boxes(4, 8)
    pool = FastMultiScaleRoIAlign(list(feats), 7, 2)
    expected = pool(feats, boxes, [(256, 320)] * 2)
    pid, executor = roi_align._POOL
    roi_align._POOL = (pid + 1, executor)
    assert torch.equal(pool(feats, boxes, [(256, 320)] * 2), expected)
    assert roi_align._POOL[0] == pid and roi_align._POOL[1] is not executor


def test_autocast_and_other_dtypes_take_torchvision_s_path(threads):
    # autocast is per thread (pool threads would not see it): under CPU autocast the stock path runs and
    # gives torchvision's bfloat16 result
    threads(2)
    feats, boxes = features_and_boxes(4, 8)
    names, shapes = list(feats), [(256, 320)] * 2
    bf16 = OrderedDict((k, v.bfloat16()) for k, v in feats.items())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = MultiScaleRoIAlign(names, 7, 2)(bf16, boxes, shapes)
        got = FastMultiScaleRoIAlign(names, 7, 2)(bf16, boxes, shapes)
    assert got.dtype == expected.dtype and torch.equal(got, expected)


def random_rois(n, batch, g, spread=120.0):
    """Boxes of every kind: inside and across the map's borders, off it, tiny, degenerate, reversed."""
    xy = torch.rand(n, 2, generator=g) * spread - 20
    wh = torch.rand(n, 2, generator=g) ** 2 * 90
    rois = torch.cat([torch.randint(0, batch, (n, 1), generator=g).float(), xy, xy + wh], 1)
    rois[:3, 3:] = rois[:3, 1:3]  # zero size
    rois[3, 1:] = torch.tensor([40.0, 30.0, 10.0, 5.0])  # reversed corners
    rois[4, 1:] = torch.tensor([500.0, 500.0, 600.0, 560.0])  # off the map
    return rois


@pytest.mark.parametrize("sampling,aligned,scale,dtype", [
    (0, False, 0.25, torch.float32), (0, True, 0.125, torch.float32), (2, False, 0.1, torch.float32),
    (3, True, 1 / 32, torch.float32), (1, False, 0.5, torch.float32), (0, True, 0.25, torch.float64)])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("channels", [6, 20])  # index_add_'s serial loop, and its sorted path from 16 columns
def test_backward_equals_torchvision_s_kernel_to_the_bit(threads, monkeypatch, sampling, aligned, scale, dtype,
                                                        n_threads, channels):
    threads(n_threads)
    # batches and steps of a few points: a box's points cross their bounds
    monkeypatch.setattr(roi_align, "_POINTS_PER_BATCH", 300)
    monkeypatch.setattr(roi_align, "_POINTS_PER_STEP", 37)
    g = torch.Generator().manual_seed(sampling * 10 + int(aligned))
    batch, height, width = 2, 17, 23
    rois = random_rois(60, batch, g).to(dtype)
    grad = torch.randn(len(rois), channels, 7, 5, generator=g, dtype=dtype)
    args = (rois, scale, 7, 5, batch, channels, height, width, sampling, aligned)
    expected = torch.ops.torchvision._roi_align_backward(grad, *args)
    got = roi_align_backward(grad, *args)
    assert expected.abs().sum() > 0 and got.dtype == dtype and got.is_contiguous()
    assert torch.equal(got, expected)
    # a strided gradient (as autograd may hand it over) reads the same values
    strided = torch.randn(len(rois), 7, 5, channels, generator=g, dtype=dtype).permute(0, 3, 1, 2)
    assert torch.equal(roi_align_backward(strided, *args),
                       torch.ops.torchvision._roi_align_backward(strided, *args))


def test_backward_keeps_torchvision_s_nans_and_no_boxes():
    g = torch.Generator().manual_seed(3)
    rois = random_rois(20, 1, g)
    grad = torch.randn(20, 4, 7, 7, generator=g)
    grad[4, 0, 0, 0] = float("nan")  # the off-map box: torchvision adds nothing of it
    grad[7, 1, 3, 3] = float("inf")
    args = (rois, 0.25, 7, 7, 1, 4, 16, 16, 0, False)
    expected, got = torch.ops.torchvision._roi_align_backward(grad, *args), roi_align_backward(grad, *args)
    assert torch.equal(got.isnan(), expected.isnan()) and not expected.isfinite().all()
    assert torch.equal(got.nan_to_num(0.0, 1.0, -1.0), expected.nan_to_num(0.0, 1.0, -1.0))
    none = roi_align_backward(torch.zeros(0, 4, 7, 7), torch.zeros(0, 5), 0.25, 7, 7, 1, 4, 16, 16, 0, False)
    assert none.shape == (1, 4, 16, 16) and not none.any()


def test_backward_hands_torchvision_what_it_does_not_compute():
    g = torch.Generator().manual_seed(5)
    rois = random_rois(12, 1, g)
    grad = torch.randn(12, 4, 7, 7, generator=g)
    args = (0.25, 7, 7, 1, 4, 16, 16, 2, False)
    # boxes at NaN / inf: torchvision's kernel adds nothing of their points
    bad = rois.clone()
    bad[0, 2], bad[1, 1:] = float("nan"), torch.tensor([0.0, -float("inf"), 1.0, float("inf")])
    assert torch.equal(roi_align_backward(grad, bad, *args), torch.ops.torchvision._roi_align_backward(grad, bad, *args))
    with pytest.raises(RuntimeError, match="same type"):  # torchvision's own error
        roi_align_backward(grad, rois.double(), *args)
    none = roi_align_backward(torch.zeros(12, 0, 7, 7), rois, 0.25, 7, 7, 1, 0, 16, 16, 2, False)
    assert none.shape == (1, 0, 16, 16)


def test_pooler_uses_this_backward_and_a_graph_of_the_gradient(threads, monkeypatch):
    threads(1)
    calls = []

    def counted(*args):
        calls.append(args[1].shape)
        return roi_align_backward(*args)
    monkeypatch.setattr(roi_align, "roi_align_backward", counted)
    feats, boxes = features_and_boxes(3, 8)
    names, shapes = list(feats), [(256, 320)] * 2
    grads = {}
    for cls in (MultiScaleRoIAlign, FastMultiScaleRoIAlign):
        x = OrderedDict((k, v.clone().requires_grad_()) for k, v in feats.items())
        loss = cls(names, 7, 0)(x, boxes, shapes).pow(2).sum()
        grads[cls] = torch.autograd.grad(loss, list(x.values()), create_graph=True)  # as torchvision allows
    assert len(calls) == 3  # one per level
    assert all(torch.equal(a, b) for a, b in zip(*grads.values()))
