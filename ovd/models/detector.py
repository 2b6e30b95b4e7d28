"""The mmengine face of ViLD: built from a config, trained by mmengine's Runner, vocabulary swappable."""
from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

from mmengine.model import BaseModel
from torchvision.models.detection import FasterRCNN
from torch import Tensor

from ovclip.errors import UserInputError
from ovclip.options import check_arguments, check_keys, with_defaults
from ovclip.io import to_unit_float
from ovclip.regions import region_embeddings
from ovclip.teacher import image_trunk, load_teacher
from ovclip.classifier import VocabularyEmbeddings
from ovclip.vocabulary import Vocabulary

from ..registry import MODELS
from .vild import build_vild

TARGET_KEYS = ("boxes", "labels", "masks", "weights", "distill_boxes", "distill_embeddings")
# model.detector: torchvision's Faster R-CNN settings (RPN, box head sampling, sizes; the parts it builds are
# set here), its transform's extra options, and build_vild's RoIAlign sampling ratio.
DETECTOR_KEYS = tuple(k for k in inspect.signature(FasterRCNN).parameters
                      if k not in ("backbone", "num_classes", "box_predictor", "kwargs")) \
    + ("size_divisible", "fixed_size", "roi_sampling_ratio", "box_pre_nms_top_n")
DISTILL_DEFAULTS = {"source": "store", "num_regions": 300, "scales": (1.0, 1.5), "batch_size": 64}


class DistillConfigError(UserInputError, ValueError):
    """The distillation settings do not fit the data."""


@MODELS.register_module()
class ViLDDetector(BaseModel):
    """ViLD (text classifier + region-embedding distillation + ensemble) as an mmengine model.

    `distill.source` says where the teacher's region embeddings come from: "store" (the dataset's
    feature store, made by tools/precompute.py), "online" (the teacher embeds each step's top
    `num_regions` RPN proposals) or "none" (ViLD-text). The teacher is kept outside the module tree:
    it is never trained, saved in checkpoints or wrapped by DDP.

    `gt_classes`: 'base' (ViLD) trains the text head over background + the vocabulary's base classes;
    'all' over every class (an oracle trained with the novel boxes too). `image_background`: include the
    learned background in the image branch's softmax at inference (wusize/ovdet's variant; ViLD and
    DetPro leave it out). `separate_heads`: ViLD-ensemble's image branch with its own box head.
    """

    def __init__(self, teacher: "str | dict", vocabulary: "str | Sequence[str] | Vocabulary",
                 templates: "str | Sequence[str] | dict" = "vild",
                 backbone: str = "resnet50", backbone_weights: Optional[str] = None, trainable_layers: int = 3,
                 backbone_norm: str = "frozen_bn", box_head_dim: int = 1024, fpn_channels: int = 256,
                 anchor_sizes: Optional[Sequence[int]] = None, fpn_levels: int = 2,
                 temperature: float = 0.01, separate_heads: bool = True, text_loss_weight: float = 1.0,
                 image_loss_weight: float = 0.5, inference_mode: str = "ensemble", with_mask: bool = False,
                 distill: Optional[dict] = None, detector: Optional[dict] = None, gt_classes: str = "base",
                 image_background: bool = False, teacher_precision: str = "fp32",
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.distill = with_defaults("distill", distill, DISTILL_DEFAULTS, DistillConfigError)
        if self.distill["source"] not in ("store", "online", "none"):
            raise DistillConfigError(f"model.distill.source must be 'store', 'online' or 'none', "
                                     f"not '{self.distill['source']}'")
        self.teacher = load_teacher(teacher, device="cpu", precision=teacher_precision)
        self.text = VocabularyEmbeddings(self.teacher, vocabulary, templates)
        online = self.distill["source"] == "online" and image_loss_weight > 0
        detector = dict(detector or {})
        check_keys("model.detector", detector, DETECTOR_KEYS)
        check_arguments("model.detector", FasterRCNN,
                        {k: v for k, v in detector.items() if k not in ("roi_sampling_ratio", "box_pre_nms_top_n")})
        trunk = None
        if backbone == "teacher":  # a copy of the teacher's image tower, fed the teacher's pixel statistics
            trunk = image_trunk(self.teacher)
            detector.setdefault("image_mean", list(self.teacher.mean))
            detector.setdefault("image_std", list(self.teacher.std))
        self.detector = build_vild(
            self.text, backbone=backbone, backbone_weights=backbone_weights,
            trainable_layers=trainable_layers, backbone_norm=backbone_norm, box_head_dim=box_head_dim,
            fpn_channels=fpn_channels, anchor_sizes=anchor_sizes, fpn_levels=fpn_levels,
            temperature=temperature, separate_heads=separate_heads,
            text_loss_weight=text_loss_weight,
            image_loss_weight=image_loss_weight if self.distill["source"] != "none" else 0.0,
            inference_mode=inference_mode, with_mask=with_mask,
            region_teacher=self._region_teacher if online else None,
            num_distill_regions=int(self.distill["num_regions"]), trunk=trunk, gt_classes=gt_classes,
            image_background=image_background, **detector)

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes detected now."""
        return self.text.vocabulary

    def _region_teacher(self, image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        teacher = self.teacher.to(image.device)
        r = region_embeddings(teacher, image, boxes, self.distill["scales"], self.distill["batch_size"])
        return r.embeddings, r.valid

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Detect these classes from now on: one text-encoder pass (cached) at the next forward, no weight
        changes."""
        return self.text.set_vocabulary(vocabulary)

    def forward(self, inputs: Sequence[Tensor], data_samples: Optional[Sequence[dict]] = None,
                mode: str = "tensor") -> Any:
        """mode 'loss' -> dict of losses; 'predict' -> one dict of detections per image (with its
        image_id); 'tensor' -> torchvision's raw detections."""
        images = [to_unit_float(x) for x in inputs]
        if mode == "loss":
            if data_samples is None:
                raise ValueError("mode='loss' needs data_samples with boxes and labels")
            targets = [{k: ds[k] for k in TARGET_KEYS if k in ds} for ds in data_samples]
            if self.distill["source"] == "store" and self.detector.roi_heads.image_loss_weight > 0 \
                    and any("distill_boxes" not in t for t in targets):
                raise DistillConfigError(
                    "model.distill.source='store' but the training data has no distillation regions: give the "
                    "dataset a feature_store (tools/precompute.py), or set model.distill.source='online' or 'none'")
            return self.detector(images, targets)
        return prediction_outputs(self.detector(images), data_samples, mode)


def prediction_outputs(detections: list[dict], data_samples: Optional[Sequence[dict]], mode: str) -> Any:
    """A detector's forward result outside training: the detections themselves (mode 'tensor') or each with
    its sample's image_id (mode 'predict', what the evaluators read)."""
    if mode == "tensor":
        return detections
    if mode != "predict":
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', not '{mode}'")
    samples = data_samples or [{} for _ in detections]
    return [{"image_id": ds.get("image_id", i), **det} for i, (ds, det) in enumerate(zip(samples, detections))]
