"""A mask-proposal segmenter (ZSSeg / MaskFormer style): a light query decoder proposes class-agnostic
masks, trained on base classes; each mask is classified by the student's own CLIP-space embedding
(distilled from the teacher's embedding of the masked region) and by the teacher itself, ensembled;
per-pixel labels come from combining the masks."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ovclip.options import with_defaults
from ovclip.regions import mask_embeddings
from ovclip.classifier import OpenVocabularyClassifier, VocabularyEmbeddings, base_mask_of
from ovclip.teacher import load_teacher
from ovclip.vocabulary import Vocabulary

from ..registry import MODELS
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMS,
    SegmentationModel,
    build_backbone,
    feature_channels,
    infer_logits,
    normalize_batch,
)
from .maskclip import check_inference
from .maskclip_plus import training_targets

LOSS_DEFAULTS = {"class": 1.0, "mask": 5.0, "dice": 5.0, "distill": 1.0, "no_object": 0.1}
ENSEMBLE_DEFAULTS = {"base": 0.35, "novel": 0.65}  # weight of the teacher's probability (geometric mean)


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean dice loss of (N, P) mask logits against (N, P) binary targets."""
    p = logits.sigmoid()
    return (1 - (2 * (p * targets).sum(1) + 1) / (p.sum(1) + targets.sum(1) + 1)).mean()


def semantic_segments(label: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """The classes present in a (H, W) label map and one binary mask per class (labels >= K are skipped)."""
    classes = [int(c) for c in label.unique() if int(c) < num_classes]
    if not classes:
        return torch.zeros(0, dtype=torch.long, device=label.device), label.new_zeros((0, *label.shape)).bool()
    classes_t = torch.tensor(classes, device=label.device)
    return classes_t, label[None] == classes_t[:, None, None]


@MODELS.register_module()
class MaskProposalSegmenter(SegmentationModel):
    """Class-agnostic mask proposals from `num_queries` learned queries (a transformer decoder over the
    backbone's features), classified in the teacher's embedding space. `backbone`: a torchvision name
    ('resnet50', 'mobilenet_v3_small', ...) or any mmseg backbone's config dict (its last level is used).

    Training (base classes only): Hungarian matching of queries to the ground-truth class segments;
    cross-entropy over base classes + "no object", BCE + dice on matched masks, and an L1 loss pulling each
    query's embedding towards the teacher's embedding of its (binarised, detached) predicted masked region,
    for every query: so the student's embedding also learns regions of novel classes.
    Inference: p = p_student^(1-w) * p_teacher^w with w = ensemble['base'] / ['novel'], weighted by the
    query's objectness; pixel scores sum the masks weighted by p (MaskFormer's semantic inference).
    `use_teacher=False` classifies with the student alone."""

    def __init__(self, teacher: "str | dict", vocabulary: "str | Sequence[str] | Vocabulary",
                 templates: "str | Sequence[str] | dict" = "maskclip",
                 backbone: "str | dict" = "resnet50", backbone_weights: Optional[str] = None,
                 backbone_norm: str = "bn", output_stride: int = 16, num_queries: int = 16, hidden_dim: int = 128,
                 decoder_layers: int = 2, temperature: float = 0.05, loss_weights: Optional[dict] = None,
                 ensemble: Optional[dict] = None, use_teacher: bool = True, teacher_crop_scale: float = 1.0,
                 inference: Optional[dict] = None, teacher_precision: str = "fp32",
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.loss_weights = with_defaults("loss_weights", loss_weights, LOSS_DEFAULTS, ValueError)
        self.ensemble = with_defaults("ensemble", ensemble, ENSEMBLE_DEFAULTS, ValueError)
        self.use_teacher, self.crop_scale = use_teacher, teacher_crop_scale
        self.teacher = load_teacher(teacher, precision=teacher_precision)
        self.text = VocabularyEmbeddings(self.teacher, vocabulary, templates)
        self.inference = check_inference(inference)
        # "no object" is the classifier's learned background (column 0). Registered first, its value drawn below
        # at the point it always was: parameter order and initial weights stay as they were.
        self.classifier = OpenVocabularyClassifier(self.text, temperature, torch.zeros(self.teacher.embed_dim))
        if isinstance(backbone, dict):  # any mmseg backbone ("TeacherTrunk" included), its last level used
            from .mmseg_student import MMSegBackbone, uses_teacher_pixels
            self.backbone = MMSegBackbone(backbone, self.teacher)
            channels = feature_channels(self.backbone)["out"]
        else:
            self.backbone, channels = build_backbone(backbone, backbone_weights, backbone_norm, output_stride)
        self.pixel_stats = ((tuple(self.teacher.mean), tuple(self.teacher.std)) if isinstance(backbone, dict)
                            and uses_teacher_pixels(backbone) else (IMAGENET_MEAN, IMAGENET_STD))
        norm = NORMS["gn"]
        self.pixel_decoder = nn.Sequential(nn.Conv2d(channels, hidden_dim, 1), norm(hidden_dim), nn.ReLU(),
                                           nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), norm(hidden_dim), nn.ReLU())
        self.queries = nn.Embedding(num_queries, hidden_dim)
        layer = nn.TransformerDecoderLayer(hidden_dim, nhead=4, dim_feedforward=2 * hidden_dim, dropout=0.0,
                                           batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, decoder_layers)
        self.mask_head = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim))
        self.embed_head = nn.Linear(hidden_dim, self.teacher.embed_dim)
        with torch.no_grad():
            self.classifier.background.copy_(torch.randn(self.teacher.embed_dim) * 0.02)

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes segmented now."""
        return self.text.vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Segment these classes from now on: one text-encoder pass (at the next use), no weight changes."""
        return self.text.set_vocabulary(vocabulary)

    def proposals(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) normalised images -> mask logits (B, Q, h, w) at the backbone's stride and the
        queries' unit embeddings (B, Q, D)."""
        pixels = self.pixel_decoder(self.backbone(images)["out"])
        b = pixels.shape[0]
        q = self.decoder(self.queries.weight[None].expand(b, -1, -1), pixels.flatten(2).transpose(1, 2))
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_head(q), pixels)
        return masks, F.normalize(self.embed_head(q), dim=-1)

    def class_logits(self, embeddings: Tensor, classes: Optional[Tensor] = None) -> Tensor:
        """(..., D) unit embeddings -> logits over the vocabulary's classes (or those at `classes`) with
        "no object" last, MaskFormer's order (the shared classifier puts its background first)."""
        logits = self.classifier(embeddings, classes=classes)
        return torch.cat([logits[..., 1:], logits[..., :1]], dim=-1)

    def loss(self, inputs: Sequence[Tensor], data_samples: Sequence[dict]) -> dict[str, Tensor]:
        """Matching, class, mask, dice and distillation losses over a batch."""
        images = normalize_batch(inputs, *self.pixel_stats)
        masks, emb = self.proposals(images)
        b, nq, h, w = masks.shape
        base = base_mask_of(self.vocabulary)
        base_idx = (base.nonzero().flatten() if base is not None else torch.arange(len(self.vocabulary)))
        base_idx = base_idx.to(masks.device)
        remap = torch.full((len(self.vocabulary),), -1, dtype=torch.long, device=masks.device)
        remap[base_idx] = torch.arange(len(base_idx), device=masks.device)
        logits = self.class_logits(emb, base_idx)  # (B, Q, base + 1)
        gt = torch.stack([ds["gt"] for ds in data_samples]).to(masks.device)
        gt = training_targets(gt, None, base)  # never a non-base label, whatever the data says
        small_gt = F.interpolate(gt[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        cls_target = torch.full((b, nq), len(base_idx), dtype=torch.long, device=masks.device)
        mask_logits, mask_targets = [], []
        for i in range(b):
            classes, segs = semantic_segments(small_gt[i], len(self.vocabulary))
            if not len(classes):
                continue
            segs = segs.flatten(1).float()
            pred = masks[i].flatten(1)
            with torch.no_grad():
                prob = logits[i].softmax(-1)[:, remap[classes]]  # (Q, n)
                sig = pred.sigmoid()
                dice = 1 - (2 * sig @ segs.T + 1) / (sig.sum(1)[:, None] + segs.sum(1)[None] + 1)
                bce = (F.binary_cross_entropy_with_logits(pred[:, None].expand(-1, len(segs), -1),
                                                          segs[None].expand(nq, -1, -1), reduction="none")).mean(-1)
                cost = -prob + dice + bce
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            rows, cols = torch.as_tensor(rows, device=masks.device), torch.as_tensor(cols, device=masks.device)
            cls_target[i, rows] = remap[classes[cols]]
            mask_logits.append(pred[rows])
            mask_targets.append(segs[cols])
        weight = torch.ones(len(base_idx) + 1, device=masks.device)
        weight[-1] = self.loss_weights["no_object"]
        lw = self.loss_weights
        losses = {"loss_class": lw["class"] * F.cross_entropy(logits.flatten(0, 1), cls_target.flatten(), weight)}
        if mask_logits:
            ml, mt = torch.cat(mask_logits), torch.cat(mask_targets)
            losses["loss_mask"] = lw["mask"] * F.binary_cross_entropy_with_logits(ml, mt)
            losses["loss_dice"] = lw["dice"] * dice_loss(ml, mt)
        else:
            losses["loss_mask"] = losses["loss_dice"] = masks.sum() * 0.0
        if lw["distill"] > 0:
            losses["loss_distill"] = lw["distill"] * self._distill_loss(inputs, masks, emb)
        return losses

    def _distill_loss(self, inputs: Sequence[Tensor], masks: Tensor, emb: Tensor) -> Tensor:
        """L1 between each query's embedding and the teacher's embedding of its predicted masked region."""
        total, count = emb.sum() * 0.0, 0
        self.teacher.to(masks.device)
        for img, m, e in zip(inputs, masks, emb):
            full = F.interpolate(m[None].detach(), size=img.shape[-2:], mode="bilinear", align_corners=False)[0] > 0
            r = mask_embeddings(self.teacher, img, full, self.crop_scale)
            valid = r.valid.to(e.device)
            if valid.any():
                total = total + F.l1_loss(e[valid], r.embeddings.to(e.device)[valid], reduction="sum")
                count += int(valid.sum())
        return total / max(count, 1)

    def window_scores(self, image: Tensor) -> Tensor:
        """(K, h, w) log pixel scores of one (3, H, W) [0, 1] window at the backbone's stride."""
        masks, emb = self.proposals(normalize_batch([image], *self.pixel_stats))
        masks, emb = masks[0], emb[0]
        probs = self.class_logits(emb).softmax(-1)  # (Q, K + 1)
        objectness, student = 1 - probs[:, -1:], probs[:, :-1]
        student = student / student.sum(-1, keepdim=True).clamp_min(1e-8)
        if self.use_teacher:
            full = F.interpolate(masks[None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0] > 0
            r = mask_embeddings(self.teacher.to(image.device), image, full, self.crop_scale)
            scale = float(self.teacher.model.logit_scale.exp())
            teacher = (scale * r.embeddings.to(emb.device) @ self.classifier.text_embeddings.T).softmax(-1)
            base = base_mask_of(self.vocabulary)
            w = torch.full((len(self.vocabulary),), self.ensemble["novel"], device=emb.device)
            if base is not None:
                w[base.to(emb.device)] = self.ensemble["base"]
            mixed = student.clamp_min(1e-8) ** (1 - w) * teacher.clamp_min(1e-8) ** w
            student = torch.where(r.valid.to(emb.device)[:, None], mixed / mixed.sum(-1, keepdim=True), student)
        scores = torch.einsum("qk,qhw->khw", objectness * student, masks.sigmoid())
        return scores.clamp_min(1e-8).log()

    def logits(self, image: Tensor) -> Tensor:
        """(K, H, W) log pixel scores of one image at its own size."""
        return infer_logits(self.window_scores, image, **self.inference)
