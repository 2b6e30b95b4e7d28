import torch
from torchvision.ops import box_iou, nms, roi_align


def test_torchvision_compiled_ops_run():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(16.0).view(1, 1, 4, 4)
    out = roi_align(feats, [torch.tensor([[0.0, 0.0, 4.0, 4.0]])], output_size=1, aligned=True, sampling_ratio=2)
    assert torch.isclose(out.flatten()[0], feats.mean())
    assert box_iou(boxes[:1], boxes[:1]).item() == 1.0
