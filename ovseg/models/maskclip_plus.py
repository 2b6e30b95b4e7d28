"""MaskCLIP+: an mmseg segmentor whose classifier is the vocabulary's text embeddings, trained on
MaskCLIP's pixel pseudo-labels (and base-class ground truth), then on its own predictions."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ovclip.options import with_defaults
from ovclip.classifier import OpenVocabularyClassifier, VocabularyEmbeddings, base_mask_of, check_gt_classes
from ovclip.teacher import load_teacher
from ovclip.vocabulary import Vocabulary

from ..data import BACKGROUND, IGNORE
from ..registry import MODELS
from .common import IMAGENET_MEAN, IMAGENET_STD, SegmentationModel, infer_logits, normalize_batch
from .maskclip import DenseTeacher, check_inference
from .mmseg_student import MMSegStudent, uses_teacher_pixels

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
    """An mmseg segmentor (`segmentor`: an mmseg `EncoderDecoder` config, as mmseg writes it; MaskCLIP+'s own
    is configs/_base_/models/maskclip_plus_deeplabv2_r101.py) whose heads end in the teacher's embedding
    size, classified by cosine with the text embeddings. Trained with cross-entropy on `training_targets`;
    the pseudo-labels come from MaskCLIP (the teacher, kept outside the module tree) and, from iteration
    `pseudo_label.self_train_from` on, from the student's own predictions (self-training).
    `pseudo_label=None` trains on ground truth alone; ground truth of non-base classes is used only with
    `gt_classes="all"` (the oracle, with every class's labels). The mmseg backbone `TeacherTrunk` starts the
    student from a copy of a ModifiedResNet teacher's image tower; `freeze_backbone=True` trains the heads
    alone."""

    def __init__(self, teacher: "str | dict", vocabulary: "str | Sequence[str] | Vocabulary",
                 templates: "str | Sequence[str] | dict" = "maskclip",
                 segmentor: Optional[dict] = None, freeze_backbone: bool = False, temperature: float = 0.05,
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
        if not isinstance(segmentor, dict):
            raise ValueError("MaskCLIPPlus needs segmentor=dict(type='EncoderDecoder', backbone=..., decode_head=...): "
                             "an mmseg segmentor config; MaskCLIP+'s own (DeepLabV2 on ResNet-101) is in "
                             "configs/_base_/models/maskclip_plus_deeplabv2_r101.py")
        # any mmseg segmentor, its heads ending in the embedding size
        self.student = MMSegStudent(segmentor, self.teacher.embed_dim, self.teacher)
        self.pixel_stats = ((tuple(self.teacher.mean), tuple(self.teacher.std))
                            if uses_teacher_pixels(segmentor.get("backbone") or {}) else (IMAGENET_MEAN, IMAGENET_STD))
        if freeze_backbone:  # weights stay as loaded; batch-norm statistics still follow the training data
            self.student.backbone.requires_grad_(False)
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
        with `with_aux`, the auxiliary heads' embeddings with their loss weights)."""
        main, aux = self.student(images, with_aux)
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
