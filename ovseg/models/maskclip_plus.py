"""MaskCLIP+: a DeepLabV3 student whose classifier is the vocabulary's text embeddings, trained on
MaskCLIP's pixel pseudo-labels (and base-class ground truth), then on its own predictions."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from ovclip.options import with_defaults
from ovclip.classifier import OpenVocabularyClassifier, VocabularyEmbeddings, base_mask_of, check_gt_classes
from ovclip.teacher import load_teacher
from ovclip.vocabulary import Vocabulary

from ..data import BACKGROUND, IGNORE
from ..registry import MODELS
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeepLabV3PlusHead,
    SegmentationModel,
    TeacherTrunk,
    build_backbone,
    feature_channels,
    infer_logits,
    normalize_batch,
)
from .maskclip import DenseTeacher, check_inference

PSEUDO_DEFAULTS = {"classes": "novel", "threshold": None, "key_smoothing": None, "prompt_denoising": None,
                   "inference": None, "self_train_from": None}


def training_targets(gt: Tensor, pseudo_probs: Optional[Tensor], base: Optional[Tensor], classes: str = "novel",
                     threshold: Optional[float] = None, gt_classes: str = "base") -> Tensor:
    """(B, H, W) training labels: ground truth where it is a base class, pseudo-labels elsewhere.

    Ground truth of a non-base class is never used, whatever the dataset passed in: unseen labels cannot
    leak into training (unless `gt_classes="all"`, said explicitly, for an oracle). Pseudo-labels are
    the argmax of the class probabilities `pseudo_probs` (B, K, H, W) over the novel classes
    (`classes="novel"`, the zero-shot setting: base pixels are annotated, so an unannotated object pixel is
    taken to be novel) or over all classes (`"all"`, no annotations), kept where that probability reaches
    `threshold` (if given). BACKGROUND pixels get neither. Without a split every ground-truth class is base.
    """
    check_gt_classes(gt_classes)
    known = (gt != IGNORE) & (gt != BACKGROUND)
    if base is not None and gt_classes == "base":
        known &= base.to(gt.device)[gt.clamp(0, len(base) - 1)]
    target = torch.where(known, gt, torch.full_like(gt, IGNORE))
    if pseudo_probs is None:
        return target
    if classes not in ("novel", "all"):
        raise ValueError(f"pseudo_label.classes must be 'novel' or 'all', not '{classes}'")
    probs = pseudo_probs.detach().float()
    if classes == "novel":
        if base is None or bool(base.all()):
            raise ValueError("pseudo_label.classes='novel' needs a vocabulary with novel classes")
        probs = probs.masked_fill(base.to(probs.device).view(1, -1, 1, 1), float("-inf"))
    confidence, label = probs.max(dim=1)
    fill = ~known & (gt != BACKGROUND)
    if threshold is not None:
        fill &= confidence >= threshold
    return torch.where(fill, label, target)


def student_probabilities(logits: Tensor, base: Optional[Tensor], classes: str = "novel") -> Tensor:
    """The student's own class probabilities for self-training: the softmax of its logits over the classes
    pseudo-labels may take (the novel ones for `classes="novel"`)."""
    logits = logits.detach().float()
    if classes == "novel" and base is not None:
        logits = logits.masked_fill(base.to(logits.device).view(1, -1, 1, 1), float("-inf"))
    return logits.softmax(dim=1)


@MODELS.register_module()
class MaskCLIPPlus(SegmentationModel):
    """A torchvision DeepLabV3 whose last layer projects to the teacher's embedding size, classified by
    cosine with the text embeddings (`decoder="deeplabv3plus"` adds DeepLabV3+'s low-level fusion).
    Trained with cross-entropy on `training_targets`; the pseudo-labels come from MaskCLIP (the teacher,
    kept outside the module tree) and, from iteration `pseudo_label.self_train_from` on, from the
    student's own predictions (self-training).
    `pseudo_label=None` trains on ground truth alone; ground truth of non-base classes is used only with
    `gt_classes="all"` (the oracle, with every class's labels). `backbone="teacher"` starts the student
    from a copy of a ModifiedResNet teacher's image tower; `freeze_backbone=True` trains the head alone."""

    def __init__(self, teacher: "str | dict", vocabulary: "str | Sequence[str] | Vocabulary",
                 templates: "str | Sequence[str] | dict" = "maskclip",
                 backbone: str = "resnet101", backbone_weights: Optional[str] = None,
                 backbone_norm: str = "bn", output_stride: int = 8, freeze_backbone: bool = False,
                 decoder: str = "deeplabv3", segmentor: Optional[dict] = None, temperature: float = 0.05,
                 pseudo_label: Optional[dict] = None,
                 gt_classes: str = "base", inference: Optional[dict] = None,
                 teacher_precision: str = "fp32", data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.pseudo = None if pseudo_label is None else with_defaults("pseudo_label", pseudo_label,
                                                                      PSEUDO_DEFAULTS, ValueError)
        self.gt_classes = check_gt_classes(gt_classes)
        self.teacher = load_teacher(teacher, precision=teacher_precision)
        self.text = VocabularyEmbeddings(self.teacher, vocabulary, templates)
        self.inference = check_inference(inference)
        if segmentor is not None:  # any mmseg segmentor, its heads ending in the embedding size
            from .mmseg_student import MMSegStudent, uses_teacher_pixels
            self.student = MMSegStudent(segmentor, self.teacher.embed_dim, self.teacher)
            self.pixel_stats = ((tuple(self.teacher.mean), tuple(self.teacher.std))
                                if uses_teacher_pixels(segmentor["backbone"]) else (IMAGENET_MEAN, IMAGENET_STD))
            if freeze_backbone:
                self.student.backbone.requires_grad_(False)
            decoder = "mmseg"
        else:
            self.student = self._torchvision_student(backbone, backbone_weights, backbone_norm, output_stride,
                                                     freeze_backbone, decoder)
        self.decoder = decoder
        self.classifier = OpenVocabularyClassifier(self.text, temperature)
        self.pseudo_teacher = None
        if self.pseudo is not None:
            p = self.pseudo
            split = self.vocabulary.split
            if p["classes"] not in ("novel", "all"):
                raise ValueError(f"pseudo_label.classes must be 'novel' or 'all', not '{p['classes']}'")
            if p["classes"] == "novel" and (split is None or "novel" not in split):
                raise ValueError(f"pseudo_label.classes='novel' needs a vocabulary with novel classes; "
                                 f"'{self.vocabulary.name}' has none (use classes='all' without annotations)")
            # As MaskCLIP+'s code (`clip_unlabeled_cats`), for classes='novel' the teacher chooses among the
            # novel classes only: prompt denoising and key smoothing then see just those.
            self.pseudo_teacher = DenseTeacher(self.text, p["key_smoothing"], p["prompt_denoising"], p["inference"],
                                               classes=p["classes"])
        # Counts training steps, saved with the weights, so that self-training starts on time after a resume.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _torchvision_student(self, backbone: str, weights: Optional[str], norm: str, output_stride: int,
                             freeze_backbone: bool, decoder: str) -> DeepLabV3:
        if decoder not in ("deeplabv3", "deeplabv3plus"):
            raise ValueError(f"decoder must be 'deeplabv3' or 'deeplabv3plus', not '{decoder}' (or name an mmseg "
                             f"segmentor with `segmentor=dict(type='EncoderDecoder', ...)`)")
        plus = decoder == "deeplabv3plus"
        if backbone == "teacher":  # start from the teacher's own image tower (a trainable copy)
            body = TeacherTrunk(self.teacher, low_level=plus)
            self.pixel_stats = (tuple(self.teacher.mean), tuple(self.teacher.std))
        else:
            body, _ = build_backbone(backbone, weights, norm, output_stride, low_level=plus)
            self.pixel_stats = (IMAGENET_MEAN, IMAGENET_STD)
        channels = feature_channels(body)
        head = DeepLabV3PlusHead(channels["out"], channels["low"], self.teacher.embed_dim, norm) if plus \
            else DeepLabHead(channels["out"], self.teacher.embed_dim)
        if freeze_backbone:  # weights stay as loaded; batch-norm statistics still follow the training data
            body.requires_grad_(False)
        return DeepLabV3(body, head)

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes segmented now."""
        return self.text.vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Segment these classes from now on: one text-encoder pass (at the next use), no weight changes."""
        return self.text.set_vocabulary(vocabulary)

    def classify(self, embeddings: Tensor) -> Tensor:
        """(B, D, h, w) per-pixel embeddings -> (B, K, h, w) logits."""
        return self.classifier(F.normalize(embeddings, dim=1), dim=1)

    def embed(self, images: Tensor, with_aux: bool = False) -> "Tensor | tuple[Tensor, list[tuple[Tensor, float]]]":
        """(B, 3, H, W) normalised images -> (B, D, h, w) per-pixel embeddings at the head's stride (and,
        with `with_aux`, an mmseg student's auxiliary heads' embeddings with their loss weights)."""
        if self.decoder == "mmseg":
            main, aux = self.student(images, with_aux)
        else:
            features = self.student.backbone(images)
            main, aux = self.student.classifier(features if self.decoder == "deeplabv3plus" else features["out"]), []
        return (main, aux) if with_aux else main

    def window_scores(self, window: Tensor) -> Tensor:
        """(K, h, w) logits of one (3, H, W) [0, 1] window at the backbone's stride."""
        return self.classify(self.embed(normalize_batch([window], *self.pixel_stats)))[0]

    def logits(self, image: Tensor) -> Tensor:
        """(K, H, W) logits of one image at its own size (whole or sliding-window, as configured)."""
        return infer_logits(self.window_scores, image, **self.inference)

    def self_training(self) -> bool:
        """Whether pseudo-labels now come from the student itself."""
        start = None if self.pseudo is None else self.pseudo["self_train_from"]
        return start is not None and int(self.steps) >= start

    def loss(self, inputs: Sequence[Tensor], data_samples: Sequence[dict]) -> dict[str, Tensor]:
        """Cross-entropy against `training_targets` at the input resolution."""
        if len(inputs) < 2 and self.training and self.decoder != "mmseg":
            # torchvision's ASPP pools each image to one value per channel before a batch norm, which
            # cannot normalise a batch of one (PyTorch's error would not say which setting to change).
            raise ValueError("MaskCLIP+ trains its DeepLab head (ASPP image pooling + batch norm) on at least 2 "
                             "images per batch and device: set train_dataloader.batch_size >= 2")
        images = normalize_batch(inputs, *self.pixel_stats)
        main, aux = self.embed(images, with_aux=True)
        logits = self._upsampled_logits(main, images.shape[-2:])
        gt = torch.stack([ds["gt"] for ds in data_samples]).to(logits.device)
        pseudo, base = None, base_mask_of(self.vocabulary)
        classes = self.pseudo["classes"] if self.pseudo else "novel"
        if self.pseudo is not None:
            if self.self_training():
                pseudo = student_probabilities(logits, base, classes)
            else:
                pseudo = torch.stack([self.pseudo_teacher.probabilities(x) for x in inputs]).to(logits.device)
        target = training_targets(gt, pseudo, base, classes, self.pseudo["threshold"] if self.pseudo else None,
                                  self.gt_classes)
        self.steps += 1
        if not bool((target != IGNORE).any()):  # nothing labelled in this batch: a zero loss keeps DDP in step
            return {"loss_seg": logits.sum() * 0.0 + sum(e.sum() * 0.0 for e, _ in aux)}
        losses = {"loss_seg": F.cross_entropy(logits, target, ignore_index=IGNORE)}
        for k, (embeddings, weight) in enumerate(aux):  # mmseg's auxiliary heads, on the same targets
            aux_logits = self._upsampled_logits(embeddings, images.shape[-2:])
            losses["loss_aux" if len(aux) == 1 else f"loss_aux_{k}"] = weight * F.cross_entropy(
                aux_logits, target, ignore_index=IGNORE)
        return losses

    def _upsampled_logits(self, embeddings: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(self.classify(embeddings), size=size, mode="bilinear", align_corners=False)
