"""Any mmsegmentation segmentor as an open-vocabulary student: its decode head (and auxiliary heads) end in
a projection to the teacher's embedding size instead of a closed-set layer; the text classifier
(`ovclip.classifier.OpenVocabularyClassifier`) turns those pixel embeddings into class scores, so the
vocabulary can change without touching a weight.

The segmentor is named in the model config as mmseg writes it (`segmentor=dict(type="EncoderDecoder",
backbone=..., decode_head=..., auxiliary_head=...)`, any mmseg backbone, neck and heads); the heads'
`num_classes` are set here (whatever the config says). Its data preprocessor is not used: the ovseg
model normalises images itself. Two parts are registered with mmseg: the backbone `TeacherTrunk` (a
trainable copy of a ModifiedResNet teacher's image tower, its four stages as the four feature levels) and
the head `DeepLabV2Head` (MaskCLIP+'s student head, which mmseg does not have).
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Optional

from mmengine.config import ConfigDict
from torch import Tensor, nn

from ovclip.teacher import Teacher, image_trunk

from ..mmseg_compat import import_mmseg

SEGMENTORS = ("EncoderDecoder",)  # segmentors whose heads this wrapper knows how to re-target


class TeacherTrunkBackbone(nn.Module):
    """mmseg backbone: a trainable copy of a ModifiedResNet teacher's image tower without its attention
    pool (`ovclip.teacher.image_trunk`); returns the stages `out_indices` (0: stride 4 ... 3: stride 32).
    `teacher` is the loaded teacher (the ovseg model passes its own)."""

    def __init__(self, teacher: Teacher, out_indices: tuple = (0, 1, 2, 3)):
        super().__init__()
        if not isinstance(teacher, Teacher):
            raise ValueError("backbone type 'TeacherTrunk' takes the model's own teacher; it is filled in by the "
                             "ovseg model (use it inside a MaskCLIPPlus / mask-proposal student)")
        self.visual, self.out_indices = image_trunk(teacher), tuple(out_indices)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        v = self.visual
        stages, x = [], v.stem(x)
        for layer in (v.layer1, v.layer2, v.layer3, v.layer4):
            x = layer(x)
            stages.append(x)
        return tuple(stages[i] for i in self.out_indices)


def _deeplabv2_head() -> type:
    """DeepLabV2's classifier (Chen et al., 2017), MaskCLIP+'s student head (MaskCLIP's `ASPPHeadV2`): one
    3x3 convolution per dilation (1x1 for dilation 1) with norm and activation, their outputs summed, then
    the head's `conv_seg`. Not in mmseg; built on its BaseDecodeHead."""
    from mmcv.cnn import ConvModule
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead

    class DeepLabV2Head(BaseDecodeHead):
        def __init__(self, dilations: tuple = (6, 12, 18, 24), **kwargs: Any):
            super().__init__(**kwargs)
            self.dilations = tuple(dilations)
            self.aspp_modules = nn.ModuleList(
                ConvModule(self.in_channels, self.channels, 1 if d == 1 else 3, dilation=d, padding=0 if d == 1 else d,
                           conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
                for d in self.dilations)

        def forward(self, inputs: Any) -> Tensor:
            x = self._transform_inputs(inputs)
            return self.cls_seg(sum(branch(x) for branch in self.aspp_modules))

    return DeepLabV2Head


def _register_parts(registry: Any) -> None:
    """Our parts in mmseg's model registry: the "TeacherTrunk" backbone and the "DeepLabV2Head" head."""
    if registry.get("TeacherTrunk") is None:
        registry.register_module(name="TeacherTrunk", module=TeacherTrunkBackbone)
    if registry.get("DeepLabV2Head") is None:
        registry.register_module(name="DeepLabV2Head", module=_deeplabv2_head())


def with_teacher(backbone: dict, teacher: Optional[Teacher]) -> dict:
    """An mmseg backbone config with the model's teacher filled in when it is a "TeacherTrunk"."""
    backbone = ConfigDict(backbone)  # mmseg sets attributes on it (EncoderDecoder's `pretrained`)
    if backbone.get("type") == "TeacherTrunk":
        backbone["teacher"] = teacher
    return backbone


def uses_teacher_pixels(backbone: "dict | str") -> bool:
    """Whether a backbone (an mmseg config or a name) takes images normalised with the teacher's statistics
    (a copy of the teacher's tower) rather than ImageNet's."""
    return (dict(backbone).get("type") if isinstance(backbone, dict) else backbone) in ("TeacherTrunk", "teacher")


def build_mmseg(cfg: dict) -> nn.Module:
    """Build an mmseg model part (segmentor, backbone, head) from its config in mmseg's registry scope."""
    import_mmseg("models")
    from mmseg.registry import MODELS
    with MODELS.switch_scope_and_registry("mmseg") as registry, warnings.catch_warnings():
        # heads build their own losses, never used here (the ovseg model computes its losses)
        warnings.filterwarnings("ignore", message=".*(build_loss|avg_non_ignore).*")
        _register_parts(registry)
        return registry.build(cfg)


class MMSegBackbone(nn.Module):
    """Any mmseg backbone ("TeacherTrunk" included) as an ovseg feature extractor: its last returned level
    comes out as 'out' (choose the level with the backbone's own `out_indices`)."""

    def __init__(self, backbone: dict, teacher: Optional[Teacher] = None):
        super().__init__()
        self.body = build_mmseg(with_teacher(backbone, teacher))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Normalised images -> {'out': the backbone's last returned feature map}."""
        return {"out": self.body(x)[-1]}


def _loss_weight(head: dict) -> float:
    """An auxiliary head's loss weight: its `loss_decode`'s (the first one's, when it lists several)."""
    loss = dict(head).get("loss_decode", {})
    loss = loss[0] if isinstance(loss, (list, tuple)) and loss else loss
    return float(dict(loss).get("loss_weight", 1.0))


def _retarget(head: dict, embed_dim: int) -> dict:
    head = dict(head)
    head["num_classes"] = head["out_channels"] = embed_dim
    return head


class MMSegStudent(nn.Module):
    """An mmseg segmentor whose heads output `embed_dim`-channel pixel embeddings.

    `forward(images)` -> (main, aux): the decode head's (B, embed_dim, h, w) embeddings (unnormalised) and
    each auxiliary head's with its loss weight (from its `loss_decode`, mmseg's 0.4 in most configs)."""

    def __init__(self, segmentor: dict, embed_dim: int, teacher: Optional[Teacher] = None):
        super().__init__()
        cfg = copy.deepcopy(dict(segmentor))
        kind = cfg.setdefault("type", "EncoderDecoder")
        if kind not in SEGMENTORS:
            raise ValueError(f"segmentor type '{kind}' is not supported: use one of {list(SEGMENTORS)} (mmseg's "
                             f"backbone + decode head segmentor; any mmseg backbone, neck and heads)")
        for key in ("backbone", "decode_head"):
            if key not in cfg:
                raise ValueError(f"segmentor config needs '{key}' (an mmseg {key.replace('_', ' ')} dict)")
        cfg["decode_head"] = _retarget(cfg["decode_head"], embed_dim)
        given = cfg.get("auxiliary_head")  # none, one head or a list (mmseg builds a ModuleList for a list)
        aux = [] if given is None else [_retarget(h, embed_dim) for h in
                                        (given if isinstance(given, (list, tuple)) else [given])]
        if given is not None:
            cfg["auxiliary_head"] = aux if isinstance(given, (list, tuple)) else aux[0]
        cfg["data_preprocessor"] = None  # images arrive normalised by the ovseg model
        cfg["backbone"] = with_teacher(cfg["backbone"], teacher)
        self.segmentor = build_mmseg(cfg)
        self.aux_weights = [_loss_weight(h) for h in aux]

    @property
    def backbone(self) -> nn.Module:
        """The segmentor's backbone."""
        return self.segmentor.backbone

    def aux_heads(self) -> list[nn.Module]:
        """The auxiliary heads (none, one or several), in config order."""
        aux = getattr(self.segmentor, "auxiliary_head", None)
        return [] if aux is None else list(aux) if isinstance(aux, nn.ModuleList) else [aux]

    def forward(self, images: Tensor, with_aux: bool = False) -> tuple[Tensor, list[tuple[Tensor, float]]]:
        """(B, 3, H, W) normalised images -> the decode head's (B, embed_dim, h, w) embeddings and, with
        `with_aux`, each auxiliary head's embeddings with its loss weight."""
        features = self.segmentor.extract_feat(images)
        main = self.segmentor.decode_head(features)
        aux = [(head(features), w) for head, w in zip(self.aux_heads(), self.aux_weights)] if with_aux else []
        return main, aux
