"""A tiny ViLD (ResNet-18, random weights, random unit text embeddings) and a two-image batch, shared by
the ViLD tests."""
import torch
import torch.nn.functional as F

from ovd.models.vild import build_vild


def tiny_vild(classes=3, dim=32, **kw):
    torch.manual_seed(0)
    text = F.normalize(torch.randn(classes, dim), dim=-1)
    return build_vild(text, backbone="resnet18", trainable_layers=5, min_size=96, max_size=128,
                      rpn_batch_size_per_image=32, box_batch_size_per_image=32, **kw)


def synthetic_batch():
    g = torch.Generator().manual_seed(1)
    images, targets = [], []
    for i in range(2):
        img = torch.rand(3, 96, 128, generator=g) * 0.2
        box = torch.tensor([[10.0 + 20 * i, 15.0, 60.0 + 20 * i, 70.0]])
        img[:, 15:70, 10 + 20 * i:60 + 20 * i] = torch.tensor([0.9, 0.2 * i, 0.1]).view(3, 1, 1)
        images.append(img)
        targets.append({"boxes": box, "labels": torch.tensor([i]),
                        "distill_boxes": torch.cat([box, torch.tensor([[0.0, 0.0, 40.0, 40.0]])]),
                        "distill_embeddings": F.normalize(torch.randn(2, 32, generator=g), dim=-1)})
    return images, targets
