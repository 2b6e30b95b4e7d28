"""The FPN backbones ViLD is built on besides torchvision's ResNet-FPN: a MobileNetV3 FPN and an FPN over a
CLIP RN teacher's own image tower (`ovclip.teacher.image_trunk`)."""
from __future__ import annotations

import math
from typing import Optional

from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d


NORM_LAYERS = {"frozen_bn": None, "bn": nn.BatchNorm2d,
               "gn": lambda channels: nn.GroupNorm(math.gcd(channels, 32), channels)}


def mobilenet_fpn(name: str = "mobilenet_v3_small", weights: Optional[str] = None, fpn_channels: int = 64,
                  norm_layer=None, levels: int = 2) -> BackboneWithFPN:
    """A small MobileNetV3 + FPN backbone (the last `levels` stages, strides 8 / 16 / 32, and a max-pool
    level) of any FPN width: a detector of a few MB, as the CPU benchmark's student."""
    builder = {"mobilenet_v3_small": mobilenet_v3_small, "mobilenet_v3_large": mobilenet_v3_large}.get(name)
    if builder is None:
        raise ValueError(f"unknown MobileNet backbone '{name}'; use mobilenet_v3_small or mobilenet_v3_large")
    features = builder(weights=weights, **({"norm_layer": norm_layer} if norm_layer else {})).features
    stages = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)] + [len(features) - 1]
    if not 1 <= levels <= len(stages):
        raise ValueError(f"{name} has {len(stages)} feature stages; levels must be 1..{len(stages)}")
    picked = stages[-levels:]
    channels = [features[i].out_channels for i in picked]
    return BackboneWithFPN(features, {str(i): str(k) for k, i in enumerate(picked)}, channels, fpn_channels,
                           extra_blocks=LastLevelMaxPool())


def trunk_fpn(trunk: nn.Module, fpn_channels: int = 64, levels: int = 3, trainable_layers: int = 3,
              norm: str = "bn") -> BackboneWithFPN:
    """An FPN over the last `levels` stages of a ModifiedResNet trunk (`ovclip.teacher.image_trunk`:
    layer2..layer4 are strides 8 / 16 / 32) and a max-pool level. The top `trainable_layers` of
    layer4, layer3, layer2, layer1, stem train (torchvision's convention), the others are frozen;
    norm 'frozen_bn' also fixes the batch-norm statistics, 'bn' lets them follow the data."""
    stages = ["layer1", "layer2", "layer3", "layer4"]
    if not 1 <= levels <= len(stages):
        raise ValueError(f"the teacher trunk has {len(stages)} stages; fpn_levels must be 1..{len(stages)}")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be 0..5, not {trainable_layers}")
    if norm not in ("bn", "frozen_bn"):
        raise ValueError(f"a backbone copied from the teacher keeps its batch norm: backbone_norm must be 'bn' or "
                         f"'frozen_bn', not '{norm}'")
    trainable = (stages[::-1] + ["stem"])[:trainable_layers]
    for name, child in trunk.named_children():
        if (name if name in stages else "stem") not in trainable:
            child.requires_grad_(False)
    if norm == "frozen_bn":
        trunk = _freeze_batchnorm(trunk)
    picked = stages[-levels:]
    channels = [getattr(trunk, name)[-1].conv3.out_channels for name in picked]
    return BackboneWithFPN(trunk, {name: str(k) for k, name in enumerate(picked)}, channels, fpn_channels,
                           extra_blocks=LastLevelMaxPool())


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with its weights and running statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, _freeze_batchnorm(child))
    return module
