"""Pieces shared by the segmenters: student backbones, the text classifier, whole / sliding-window inference."""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from mmengine.model import BaseModel
from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small, resnet
from torchvision.models._utils import IntermediateLayerGetter

from ovclip.geometry import short_side_size, windows
from ovclip.io import to_unit_float
from ovclip.resize import resize_bilinear

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMS = {"bn": nn.BatchNorm2d, "gn": lambda channels: nn.GroupNorm(math.gcd(channels, 32), channels)}


def normalize_batch(inputs: Sequence[Tensor], mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Images (uint8 or [0, 1] floats, one size) -> a (B, 3, H, W) batch normalised with mean / std
    (ImageNet's unless given)."""
    sizes = {tuple(x.shape[-2:]) for x in inputs}
    if len(sizes) != 1:
        raise ValueError(f"a training batch needs images of one size, got {sorted(sizes)}: add a crop or resize "
                         f"to the training pipeline")
    x = torch.stack([to_unit_float(im) for im in inputs])
    mean_t, std_t = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mean, std))
    return (x - mean_t) / std_t


def build_backbone(name: str = "resnet50", weights: Optional[str] = None, norm: str = "bn",
                   output_stride: int = 8) -> tuple[nn.Module, int]:
    """A torchvision ResNet (dilated to output stride 8 or 16) or MobileNetV3 (stride 16) whose last
    feature map comes out as 'out'; returns it and the channel count of 'out'. Weights only if named."""
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


def feature_channels(backbone: nn.Module) -> dict[str, int]:
    """Channels of each named output of a backbone ('out'), from one small dummy pass."""
    training = backbone.training
    with torch.no_grad():
        out = backbone.eval()(torch.zeros(1, 3, 64, 64))
    backbone.train(training)
    return {name: int(t.shape[1]) for name, t in out.items()}


def _dilate_last_stage(layer: nn.Sequential) -> None:
    """Turn the stride-2 convolutions of a ResNet basic-block stage into dilated stride-1 ones."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (2, 2), (2, 2)


def window_logits(fn: Callable[[Tensor], Tensor], window: Tensor) -> Tensor:
    """`fn`'s (K, h', w') logits of a (3, h, w) window, resized to (K, h, w): what an exported segmenter's
    graph computes (`ovseg.export`; the runtime resizes and slides as `infer_logits`)."""
    return resize_bilinear(fn(window), window.shape[-2:])


def infer_logits(fn: Callable[[Tensor], Tensor], image: Tensor, mode: str = "whole", crop_size: Optional[int] = None,
                 stride: Optional[int] = None, short_side: Optional[int] = None) -> Tensor:
    """(K, H, W) logits of one image at its own size, from `fn` mapping a (3, h, w) [0, 1] image to
    (K, h', w') logits: on the whole image or averaged over sliding windows, after resizing the short
    side to `short_side` (if given)."""
    img = to_unit_float(image)
    height, width = img.shape[-2:]
    if short_side:
        img = resize_bilinear(img, short_side_size(height, width, short_side), antialias=True)
    h, w = img.shape[-2:]
    if mode == "whole":
        logits = window_logits(fn, img)
    elif mode == "slide":
        if not crop_size or not stride:
            raise ValueError("sliding-window inference needs crop_size and stride")
        total, count = None, torch.zeros(1, h, w, device=img.device)
        for y0, x0, y1, x1 in windows(h, w, crop_size, stride):
            part = window_logits(fn, img[:, y0:y1, x0:x1])
            if total is None:
                total = torch.zeros(part.shape[0], h, w, device=img.device)
            total[:, y0:y1, x0:x1] += torch.nan_to_num(part, neginf=-1e4)
            count[:, y0:y1, x0:x1] += 1
        logits = total / count
    else:
        raise ValueError(f"inference mode must be 'whole' or 'slide', not '{mode}'")
    if (h, w) != (height, width):
        logits = resize_bilinear(logits, (height, width))
    return logits


def prediction_samples(data_samples: Optional[Sequence[dict]], preds: Sequence[Tensor]) -> list[dict]:
    """Each input sample dict with its predicted label map `pred` added."""
    samples = data_samples or [{} for _ in preds]
    return [{**ds, "pred": p} for ds, p in zip(samples, preds)]


class SegmentationModel(BaseModel):
    """What every ovseg model shares: `loss(inputs, data_samples)` for training, `logits(image)` -> (K, H, W)
    for one image, and mmengine's three forward modes on top of them."""

    def loss(self, inputs: Sequence[Tensor], data_samples: Sequence[dict]) -> dict[str, Tensor]:
        """Training losses of a batch."""
        raise NotImplementedError

    def logits(self, image: Tensor) -> Tensor:
        """(K, H, W) class scores of one image at its own size."""
        raise NotImplementedError

    def probabilities(self, image: Tensor) -> Tensor:
        """(K, H, W) class probabilities of one image: the softmax of `logits` (-inf counts as -1e4)."""
        return torch.nan_to_num(self.logits(image).float(), neginf=-1e4).softmax(dim=0)

    def forward(self, inputs: Sequence[Tensor], data_samples: Optional[Sequence[dict]] = None,
                mode: str = "predict") -> Any:
        """mode 'loss' -> dict of losses; 'predict' -> the samples with a (H, W) label map `pred`;
        'tensor' -> (K, H, W) logits per image."""
        if mode == "loss":
            if data_samples is None:
                raise ValueError("mode='loss' needs data_samples with 'gt' label maps")
            return self.loss(inputs, data_samples)
        logits = [self.logits(x) for x in inputs]
        if mode == "tensor":
            return logits
        if mode != "predict":
            raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', not '{mode}'")
        return prediction_samples(data_samples, [lg.argmax(0) for lg in logits])
