"""Pieces shared by the segmenters: student backbones, the text classifier, whole / sliding-window inference."""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small, resnet
from torchvision.models._utils import IntermediateLayerGetter

from ovclip.io import to_unit_float
from ovclip.vocabulary import Vocabulary

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMS = {"bn": nn.BatchNorm2d, "gn": lambda channels: nn.GroupNorm(math.gcd(channels, 32), channels)}


def normalize_batch(inputs: Sequence[Tensor]) -> Tensor:
    """Images (uint8 or [0, 1] floats, one size) -> a (B, 3, H, W) batch with ImageNet statistics."""
    sizes = {tuple(x.shape[-2:]) for x in inputs}
    if len(sizes) != 1:
        raise ValueError(f"a training batch needs images of one size, got {sorted(sizes)}: add a crop or resize "
                         f"to the training pipeline")
    x = torch.stack([to_unit_float(im) for im in inputs])
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def build_backbone(name: str = "resnet50", weights: Optional[str] = None, norm: str = "bn",
                   output_stride: int = 8) -> tuple[nn.Module, int]:
    """A torchvision ResNet (dilated to output stride 8 or 16) or MobileNetV3 (stride 16) whose last
    feature map comes out as 'out'; returns it and its channel count. Weights only if named."""
    if norm not in NORMS:
        raise ValueError(f"backbone norm must be one of {sorted(NORMS)}, not '{norm}'")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, not {output_stride}")
    if name.startswith("resnet"):
        builder = getattr(resnet, name, None)
        if builder is None:
            raise ValueError(f"unknown backbone '{name}'")
        if name in ("resnet18", "resnet34"):  # basic blocks reject torchvision's dilation: only stride 16
            if output_stride == 8:
                raise ValueError(f"{name} (basic blocks) supports output_stride=16 only")
            net = builder(weights=weights, norm_layer=NORMS[norm])
            _dilate_last_stage(net.layer4)
        else:
            net = builder(weights=weights, norm_layer=NORMS[norm],
                          replace_stride_with_dilation=[False, output_stride == 8, True])
        channels = net.fc.in_features
        return IntermediateLayerGetter(net, {"layer4": "out"}), channels
    builders = {"mobilenet_v3_small": mobilenet_v3_small, "mobilenet_v3_large": mobilenet_v3_large}
    if name not in builders:
        raise ValueError(f"unknown backbone '{name}'; use a torchvision resnet or mobilenet_v3_small / _large")
    if output_stride != 16:
        raise ValueError(f"{name} has output stride 16: set output_stride=16")
    features = builders[name](weights=weights, dilated=True, norm_layer=NORMS[norm]).features
    return IntermediateLayerGetter(features, {str(len(features) - 1): "out"}), features[-1].out_channels


def _dilate_last_stage(layer: nn.Sequential) -> None:
    """Turn the stride-2 convolutions of a ResNet basic-block stage into dilated stride-1 ones."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (2, 2), (2, 2)


class TextClassifier(nn.Module):
    """Cosine similarity of per-pixel embeddings with the vocabulary's unit text embeddings, divided by a
    temperature. The text embeddings are a non-persistent buffer: swapping the vocabulary retrains nothing."""

    def __init__(self, text_embeddings: Tensor, temperature: float):
        super().__init__()
        self.temperature = temperature
        self.register_buffer("text", F.normalize(text_embeddings.float(), dim=-1), persistent=False)

    def set_text(self, text_embeddings: Tensor) -> None:
        """Classify against these (K, D) embeddings from now on."""
        self.text = F.normalize(text_embeddings.float(), dim=-1).to(self.text.device)

    def forward(self, embeddings: Tensor) -> Tensor:
        """(B, D, h, w) embeddings -> (B, K, h, w) logits."""
        return torch.einsum("bdhw,kd->bkhw", F.normalize(embeddings, dim=1), self.text) / self.temperature


def base_mask(vocabulary: Vocabulary) -> Optional[Tensor]:
    """Bool (K,) of the vocabulary's base classes, None without a split."""
    return None if vocabulary.split is None else torch.tensor([s == "base" for s in vocabulary.split])


def windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) crops of side `crop` every `stride` pixels that cover the whole image."""
    def starts(size: int) -> list[int]:
        if size <= crop:
            return [0]
        last = size - crop
        return sorted({*range(0, last, stride), last})
    return [(y, x, min(y + crop, height), min(x + crop, width)) for y in starts(height) for x in starts(width)]


def infer_logits(fn: Callable[[Tensor], Tensor], image: Tensor, mode: str = "whole", crop_size: Optional[int] = None,
                 stride: Optional[int] = None, short_side: Optional[int] = None) -> Tensor:
    """(K, H, W) logits of one image at its own size, from `fn` mapping a (3, h, w) [0, 1] image to
    (K, h', w') logits: on the whole image or averaged over sliding windows, after resizing the short
    side to `short_side` (if given)."""
    img = to_unit_float(image)
    height, width = img.shape[-2:]
    if short_side:
        scale = short_side / min(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    h, w = img.shape[-2:]

    def run(x: Tensor) -> Tensor:
        out = fn(x)
        return F.interpolate(out[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
    if mode == "whole":
        logits = run(img)
    elif mode == "slide":
        if not crop_size or not stride:
            raise ValueError("sliding-window inference needs crop_size and stride")
        total, count = None, torch.zeros(1, h, w, device=img.device)
        for y0, x0, y1, x1 in windows(h, w, crop_size, stride):
            part = run(img[:, y0:y1, x0:x1])
            if total is None:
                total = torch.zeros(part.shape[0], h, w, device=img.device)
            total[:, y0:y1, x0:x1] += torch.nan_to_num(part, neginf=-1e4)
            count[:, y0:y1, x0:x1] += 1
        logits = total / count
    else:
        raise ValueError(f"inference mode must be 'whole' or 'slide', not '{mode}'")
    if (h, w) != (height, width):
        logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return logits


def prediction_samples(data_samples: Optional[Sequence[dict]], preds: Sequence[Tensor]) -> list[dict]:
    """Each input sample dict with its predicted label map `pred` added."""
    samples = data_samples or [{} for _ in preds]
    return [{**ds, "pred": p} for ds, p in zip(samples, preds)]
