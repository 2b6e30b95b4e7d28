"""RoIAlign split across threads by channel gives torchvision's outputs and gradients bit for bit."""
from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from ovd.models.roi_align import ChannelParallelMultiScaleRoIAlign


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
                                                                (4, 16, 1, 2)])  # the last: one thread, stock path
def test_split_by_channels_equals_torchvision_to_the_bit(threads, levels, channels, n_threads, sampling):
    threads(n_threads)
    feats, boxes = features_and_boxes(levels, channels)
    names, shapes = list(feats), [(256, 320), (256, 320)]
    out = {}
    for cls in (MultiScaleRoIAlign, ChannelParallelMultiScaleRoIAlign):
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
    pool = ChannelParallelMultiScaleRoIAlign(list(feats), 7, 2)
    with torch.no_grad():
        assert torch.equal(pool(feats, boxes, [(256, 320)] * 2),
                           MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, [(256, 320)] * 2))
        assert pool(feats, [torch.zeros(0, 4), torch.zeros(0, 4)], [(256, 320)] * 2).shape == (0, 8, 7, 7)


def test_a_pool_from_another_process_is_not_used(threads):
    # A forked child holds the parent's pool object without its threads (waiting on it would hang): a pool
    # made by another process id is replaced. (Torch's own OpenMP ops hang in such a child on this stack,
    # so the fork itself is not run here.)
    import ovd.models.roi_align as roi_align
    threads(2)
    feats, boxes = features_and_boxes(4, 8)
    pool = ChannelParallelMultiScaleRoIAlign(list(feats), 7, 2)
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
        got = ChannelParallelMultiScaleRoIAlign(names, 7, 2)(bf16, boxes, shapes)
    assert got.dtype == expected.dtype and torch.equal(got, expected)
