"""ViLD on torchvision's Faster R-CNN: text-embedding classifier, region-embedding distillation, ensemble.

Only the box predictor and the RoI-head losses / post-processing differ from torchvision: RoI features
are projected to the teacher's embedding size and classified by cosine similarity against the
vocabulary's text embeddings (a swappable buffer) plus one learned background embedding; box
regression is class-agnostic. As in ViLD's TPU reference and DetPro: the text head trains over
background + base classes only, ViLD-ensemble's image branch has its own box head, and the image
branch is scored over the vocabulary's classes without the background.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    maskrcnn_inference,
    maskrcnn_loss,
)
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import boxes as box_ops

from ovclip.classifier import OpenVocabularyClassifier, VocabularyEmbeddings, check_gt_classes

from .backbones import NORM_LAYERS, mobilenet_fpn, trunk_fpn
from .losses import pseudo_label_weights, text_cross_entropy
from .postprocess import (
    ENSEMBLE_LAMBDA,
    PRE_NMS_TOP_N,
    SCORE_BLOCK_BYTES,
    candidate_scores,
    class_scores,
    ensemble_scores,
    nms_top_detections,
    select_detections,
)
from .roi_align import FastMultiScaleRoIAlign

__all__ = ["ENSEMBLE_LAMBDA", "ViLD", "ViLDPredictor", "ViLDRoIHeads", "build_vild", "ensemble_scores",
           "nms_top_detections"]



class ViLDPredictor(nn.Module):
    """Projects box-head features to the embedding space (a text head and an image head) and regresses boxes.

    With `separate_heads` the image branch has its own projection; its box head (the same architecture
    with its own weights) lives in ViLDRoIHeads, as in ViLD-ensemble (TPU reference: `distill_fc6/7`,
    `distill-project-to-clip`; DetPro: `shared_fcs_for_image`, `projection_for_image`).
    """

    def __init__(self, in_channels: int, text: "VocabularyEmbeddings | Tensor", temperature: float = 0.01,
                 separate_heads: bool = True, base_mask: Optional[Tensor] = None):
        super().__init__()
        dim = text.shape[1] if isinstance(text, Tensor) else text.teacher.embed_dim
        text_proj = nn.Linear(in_channels, dim)
        image_proj = nn.Linear(in_channels, dim) if separate_heads else text_proj
        classifier = OpenVocabularyClassifier(text, temperature, F.normalize(torch.randn(dim), dim=0), base_mask)
        bbox_pred = nn.Linear(in_channels, 4)
        # Initialised in the order above and registered with the classifier first: the parameters keep the
        # order they had when the background was this module's own (gradient clipping sums the norms in
        # that order), so trained models are the same to the bit as before the classifier was shared.
        self.classifier = classifier
        self.text_proj, self.image_proj, self.bbox_pred = text_proj, image_proj, bbox_pred

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D102 - nn.Module's hook
        # checkpoints written before the classifier was shared keep the background as this module's own
        old = prefix + "background"
        if old in state_dict and prefix + "classifier.background" not in state_dict:
            state_dict[prefix + "classifier.background"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def text_embeddings(self) -> Tensor:
        """(C, D) unit text embeddings of the vocabulary."""
        return self.classifier.text_embeddings

    @property
    def base_mask(self) -> Tensor:
        """Bool (C,): the vocabulary's base classes."""
        return self.classifier.base_mask

    def logits(self, embeddings: Tensor, weights: Optional[Tensor] = None) -> Tensor:
        """Cosine similarity to background + classes, divided by the temperature (`weights`: the
        classifier's `weights()` already computed)."""
        return self.classifier(embeddings, weights=weights)

    def training_columns(self, gt_classes: str = "base") -> Tensor:
        """Columns of `logits` a training loss may use (`OpenVocabularyClassifier.training_columns`)."""
        return self.classifier.training_columns(gt_classes)

    def embed_image(self, features: Tensor) -> Tensor:
        """The image head: box-head features (of the image branch's own box head when heads are separate)
        -> unit embeddings."""
        return F.normalize(self.image_proj(features.flatten(1)), dim=-1)

    def forward(self, features: Tensor, with_image: bool = True) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """Box-head features -> (text-head embeddings, image-head embeddings of the same features or None,
        class-agnostic box deltas)."""
        features = features.flatten(1)
        image = self.embed_image(features) if with_image else None
        return F.normalize(self.text_proj(features), dim=-1), image, self.bbox_pred(features)


class ViLDRoIHeads(RoIHeads):
    """RoIHeads with ViLD's losses (text cross-entropy over background + base classes, image L1
    distillation), scoring modes and an optional class-agnostic mask branch.

    `image_box_head`: the image branch's own box head (ViLD-ensemble's separate heads), or None to share
    the text branch's. `gt_classes`: 'base' (ViLD) trains the text head over background + base classes
    only; 'all' over every class (an oracle). `image_background`: whether the image branch's softmax at
    inference includes the learned background (wusize/ovdet's variant); ViLD's TPU reference and DetPro
    score the image branch over the vocabulary's classes only (the default). `pre_nms_top_n`: see
    `nms_top_detections`.
    """

    def __init__(self, *args, image_box_head: Optional[nn.Module] = None, image_loss_weight: float = 0.5,
                 text_loss_weight: float = 1.0, inference_mode: str = "ensemble", gt_classes: str = "base",
                 image_background: bool = False, pre_nms_top_n: Optional[int] = PRE_NMS_TOP_N, **kwargs):
        super().__init__(*args, **kwargs)
        check_gt_classes(gt_classes)  # a wrong value fails here, not at the first step
        if pre_nms_top_n is not None and (isinstance(pre_nms_top_n, bool) or not isinstance(pre_nms_top_n, int)
                                          or pre_nms_top_n < 1):
            raise ValueError(f"box_pre_nms_top_n must be a positive integer or None, not {pre_nms_top_n!r}")
        self.pre_nms_top_n = pre_nms_top_n
        self.score_block_bytes: Optional[int] = SCORE_BLOCK_BYTES  # see candidate_scores (None: dense scores)
        self.image_box_head = image_box_head
        self.image_loss_weight, self.text_loss_weight = image_loss_weight, text_loss_weight
        self.inference_mode, self.gt_classes, self.image_background = inference_mode, gt_classes, image_background

    def _embed(self, features, boxes, image_shapes, with_image: bool = True):
        """(text embeddings, image embeddings or None, box deltas) of boxes."""
        pooled = self.box_roi_pool(features, boxes, image_shapes)
        shared = self.image_box_head is None
        text, image, deltas = self.box_predictor(self.box_head(pooled), with_image and shared)
        if with_image and not shared:
            image = self.box_predictor.embed_image(self.image_box_head(pooled))
        return text, image, deltas

    def _embed_image(self, features, boxes, image_shapes) -> Tensor:
        """The image branch alone (distillation regions need no text head or box deltas)."""
        head = self.box_head if self.image_box_head is None else self.image_box_head
        return self.box_predictor.embed_image(head(self.box_roi_pool(features, boxes, image_shapes)))

    def _image_parameters(self) -> list[nn.Parameter]:
        parts = [self.box_predictor.image_proj] + ([self.image_box_head] if self.image_box_head is not None else [])
        return [p for part in parts for p in part.parameters()]

    def _mask_logits(self, features, boxes, image_shapes) -> Tensor:
        return self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))

    def forward(self, features, proposals, image_shapes, targets=None):  # noqa: D102 - torchvision's contract
        if self.training:
            return [], self._losses(features, proposals, image_shapes, targets)
        text_emb, image_emb, deltas = self._embed(features, proposals, image_shapes,
                                                  with_image=self.inference_mode != "text")
        detections = self._detect(text_emb, image_emb, deltas, proposals, image_shapes)
        if self.has_mask():
            boxes = [d["boxes"] for d in detections]
            if sum(len(b) for b in boxes):
                probs = maskrcnn_inference(self._mask_logits(features, boxes, image_shapes),
                                           [torch.zeros(len(b), dtype=torch.long, device=b.device) for b in boxes])
            else:
                probs = [torch.zeros(0, 1, *self.mask_roi_pool.output_size) for _ in boxes]
            for d, m in zip(detections, probs):
                d["masks"] = m
        return detections, {}

    def text_loss(self, text_emb: Tensor, labels: Tensor, weights: Optional[Tensor] = None) -> Tensor:
        """The text head's cross-entropy over the columns `gt_classes` allows (`losses.text_cross_entropy`)."""
        return text_cross_entropy(self.box_predictor, self.gt_classes, text_emb, labels, weights)

    def _losses(self, features, proposals, image_shapes, targets) -> dict[str, Tensor]:
        if self.has_mask() and (targets is None or any("masks" not in t for t in targets)):
            raise ValueError("the mask head needs 'masks' in every target (dataset with_masks=True)")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        text_emb, _, deltas = self._embed(features, proposals, image_shapes, with_image=False)
        flat_labels = torch.cat(labels)
        weights = pseudo_label_weights(proposals, targets)
        loss_text = self.text_loss(text_emb, flat_labels, weights)
        pos = torch.where(flat_labels > 0)[0]
        box = F.smooth_l1_loss(deltas[pos], torch.cat(regression_targets)[pos], beta=1 / 9, reduction="none")
        loss_box = (box.sum() if weights is None else (box.sum(dim=1) * weights[pos]).sum()) / flat_labels.numel()
        losses = {"loss_text": self.text_loss_weight * loss_text, "loss_box_reg": loss_box}
        if self.image_loss_weight > 0:
            boxes = [t["distill_boxes"] for t in targets] if "distill_boxes" in targets[0] else []
            if sum(len(b) for b in boxes):
                image_emb = self._embed_image(features, boxes, image_shapes)
                teacher = F.normalize(torch.cat([t["distill_embeddings"] for t in targets]).float(), dim=-1)
                losses["loss_image"] = self.image_loss_weight * F.l1_loss(image_emb, teacher, reduction="sum") \
                    / max(1, len(teacher))
            else:  # keeps every parameter in the graph (as DDP wants) when the batch has no regions
                losses["loss_image"] = sum(p.sum() for p in self._image_parameters()) * 0.0
        if self.has_mask():
            pos_props = [p[lab > 0] for p, lab in zip(proposals, labels)]
            pos_idxs = [m[lab > 0] for m, lab in zip(matched_idxs, labels)]
            logits = self._mask_logits(features, pos_props, image_shapes)
            losses["loss_mask"] = maskrcnn_loss(logits, pos_props, [t["masks"] for t in targets],
                                                [torch.zeros_like(t["labels"]) for t in targets], pos_idxs)
        return losses

    def class_scores(self, text_emb: Tensor, image_emb: Optional[Tensor]) -> Tensor:
        """(N, C) class scores by the configured mode (`postprocess.class_scores`). Detection scores through
        `postprocess.candidate_scores` (blocks of regions, the same numbers), not through this method."""
        return class_scores(self.box_predictor, text_emb, image_emb, self.inference_mode, self.image_background)

    def _detect(self, text_emb, image_emb, deltas, proposals, image_shapes):
        counts = [p.shape[0] for p in proposals]  # not len(): traced as a size when exported to ONNX
        boxes_all = self.box_coder.decode(deltas, proposals).reshape(-1, 4).split(counts)
        image_all = [None] * len(counts) if image_emb is None else image_emb.split(counts)
        return [select_detections(boxes, candidate_scores(self.box_predictor, text, image, self.inference_mode,
                                                          self.image_background, self.score_thresh,
                                                          self.score_block_bytes),
                                  shape, self.nms_thresh, self.detections_per_img, self.pre_nms_top_n)
                for boxes, text, image, shape in zip(boxes_all, text_emb.split(counts), image_all, image_shapes)]


RegionTeacher = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class ViLD(FasterRCNN):
    """Faster R-CNN whose classifier is a vocabulary of text embeddings. Labels in targets and in
    detections are positions in the current vocabulary (0-based).

    Distillation targets come either with the targets (`distill_boxes` in image pixels and
    `distill_embeddings`, read from a feature store) or, when a `region_teacher` is set, are computed
    online: the teacher embeds this step's top `num_distill_regions` RPN proposals of every image.

    `separate_heads`: ViLD-ensemble's image branch, a box head and projection of its own (the same
    architecture, its own weights); False shares them with the text branch (ViLD). `gt_classes` and
    `image_background`: see ViLDRoIHeads. `box_pre_nms_top_n`: see `nms_top_detections` (the config key is
    model.detector.box_pre_nms_top_n).
    """

    def __init__(self, backbone: nn.Module, text: "VocabularyEmbeddings | Tensor", temperature: float = 0.01,
                 separate_heads: bool = True, image_loss_weight: float = 0.5, text_loss_weight: float = 1.0,
                 inference_mode: str = "ensemble", base_mask: Optional[Tensor] = None, with_mask: bool = False,
                 region_teacher: Optional[RegionTeacher] = None, num_distill_regions: int = 300,
                 mask_featmaps: Sequence[str] = ("0", "1", "2", "3"), gt_classes: str = "base",
                 image_background: bool = False, box_pre_nms_top_n: Optional[int] = PRE_NMS_TOP_N, **kwargs):
        super().__init__(backbone, num_classes=None, box_predictor=nn.Identity(), **kwargs)
        old = self.roi_heads
        predictor = ViLDPredictor(old.box_head.fc7.out_features, text, temperature, separate_heads,
                                  base_mask)
        mask_parts = {}
        if with_mask:  # class-agnostic Mask R-CNN branch: one mask channel for any class
            channels = backbone.out_channels
            mask_parts = dict(mask_roi_pool=FastMultiScaleRoIAlign(list(mask_featmaps), 14, 2),
                              mask_head=MaskRCNNHeads(channels, [256] * 4, 1),
                              mask_predictor=MaskRCNNPredictor(256, 256, 1))
        # Same sampling, matching and box coding as the heads FasterRCNN built from **kwargs.
        self.roi_heads = ViLDRoIHeads(
            old.box_roi_pool, old.box_head, predictor, old.proposal_matcher.high_threshold,
            old.proposal_matcher.low_threshold, old.fg_bg_sampler.batch_size_per_image,
            old.fg_bg_sampler.positive_fraction, old.box_coder.weights, old.score_thresh, old.nms_thresh,
            old.detections_per_img, **mask_parts, image_box_head=_fresh_copy(old.box_head) if separate_heads else None,
            image_loss_weight=image_loss_weight, text_loss_weight=text_loss_weight, inference_mode=inference_mode,
            gt_classes=gt_classes, image_background=image_background, pre_nms_top_n=box_pre_nms_top_n)
        self.region_teacher = region_teacher
        self.num_distill_regions = num_distill_regions

    @property
    def predictor(self) -> ViLDPredictor:
        """The text-embedding box predictor."""
        return self.roi_heads.box_predictor

    def _online_distill_targets(self, images, proposals, targets_t, original_sizes, image_sizes) -> None:
        """Give each target the teacher's embeddings of this step's top proposals (in resized pixels)."""
        for img, props, t, size0, size1 in zip(images, proposals, targets_t, original_sizes, image_sizes):
            boxes = props[: self.num_distill_regions].detach()
            embeddings, valid = self.region_teacher(img, resize_boxes(boxes, size1, size0))
            valid = valid.to(boxes.device)
            t["distill_boxes"] = boxes[valid]
            t["distill_embeddings"] = embeddings.to(boxes.device)[valid]

    @torch.no_grad()
    def proposals(self, images: list[Tensor], refine: int = 0) -> list[tuple[Tensor, Tensor]]:
        """Class-agnostic RPN proposals with objectness probabilities, in each image's own pixels
        (the post-NMS top `rpn.post_nms_top_n()`), e.g. as boxes for the teacher's region store.

        `refine`: VL-PLM's box refinement, the RoI head's class-agnostic box regression applied that many
        times to its own output (VL-PLM: 10), each box keeping its RPN objectness."""
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        images_t, _ = self.transform(images)
        feature_maps = self.backbone(images_t.tensors)
        features = list(feature_maps.values())
        objectness, deltas = self.rpn.head(features)
        anchors = self.rpn.anchor_generator(images_t, features)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        decoded = self.rpn.box_coder.decode(deltas, anchors).view(len(anchors), -1, 4)
        boxes, scores = self.rpn.filter_proposals(decoded, objectness, images_t.image_sizes, per_level)
        heads = self.roi_heads
        for _ in range(refine):
            _, _, box_deltas = heads._embed(feature_maps, boxes, images_t.image_sizes, with_image=False)
            moved = heads.box_coder.decode(box_deltas, boxes).reshape(-1, 4).split([len(b) for b in boxes])
            boxes = [box_ops.clip_boxes_to_image(b, size) for b, size in zip(moved, images_t.image_sizes)]
        return [(resize_boxes(b, size1, size0), s)
                for b, s, size0, size1 in zip(boxes, scores, original_sizes, images_t.image_sizes)]

    def forward(self, images, targets=None):  # noqa: D102 - torchvision's contract
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        images_t, targets_t = self.transform(images, targets)
        if targets_t is not None:
            for t, size0, size1 in zip(targets_t, original_sizes, images_t.image_sizes):
                if "distill_boxes" in t:
                    t["distill_boxes"] = resize_boxes(t["distill_boxes"], size0, size1)
                # torchvision counts label 0 as background: shift the vocabulary positions by one.
                t["labels"] = t["labels"] + 1
        features = self.backbone(images_t.tensors)
        proposals, proposal_losses = self.rpn(images_t, features, targets_t)
        if self.training and self.region_teacher is not None and targets_t is not None \
                and "distill_boxes" not in targets_t[0]:
            self._online_distill_targets(images, proposals, targets_t, original_sizes, images_t.image_sizes)
        detections, detector_losses = self.roi_heads(features, proposals, images_t.image_sizes, targets_t)
        if self.training:
            return {**proposal_losses, **detector_losses}
        return self.transform.postprocess(detections, images_t.image_sizes, original_sizes)


def _fresh_copy(module: nn.Module) -> nn.Module:
    """The same architecture with its own, newly initialised weights."""
    copy = deepcopy(module)
    for m in copy.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return copy


# GroupNorm with up to 32 groups that divide the channels, for small batches trained from scratch.
def build_vild(text: "VocabularyEmbeddings | Tensor", backbone: str = "resnet50", trainable_layers: int = 3,
               backbone_weights: Optional[str] = None, backbone_norm: str = "frozen_bn", box_head_dim: int = 1024,
               fpn_channels: int = 256, anchor_sizes: Optional[Sequence[int]] = None, fpn_levels: int = 2,
               trunk: Optional[nn.Module] = None, roi_sampling_ratio: Optional[int] = None, **kwargs) -> ViLD:
    """ViLD with a torchvision ResNet-FPN or MobileNetV3-FPN backbone (weights only if named, e.g.
    'IMAGENET1K_V1'), or with backbone='teacher' an FPN over `trunk`, a copy of a CLIP RN teacher's
    image tower (`ovclip.teacher.image_trunk`; images are then normalised with the teacher's statistics).

    `backbone_norm`: 'frozen_bn' (torchvision's default, for pretrained backbones), or 'bn' / 'gn' to
    train a backbone from scratch. `box_head_dim`: width of the two-layer box head (1024 in the paper).
    `anchor_sizes`: one anchor size per feature level (torchvision's defaults for ResNets if not given).
    `roi_sampling_ratio`: bilinear samples per bin side of the box RoIAlign; 0 adapts it to each box
    (ceil(box size / 7) on its level: Detectron2's and MMDetection's default, and cheaper for small boxes);
    torchvision's 2 if not given.
    """
    if roi_sampling_ratio is not None and (isinstance(roi_sampling_ratio, bool) or
                                           not isinstance(roi_sampling_ratio, int) or roi_sampling_ratio < 0):
        raise ValueError(f"roi_sampling_ratio must be an integer >= 0 (0 = adaptive), not {roi_sampling_ratio!r}")
    if backbone_norm not in NORM_LAYERS:
        raise ValueError(f"backbone_norm must be one of {sorted(NORM_LAYERS)}, not '{backbone_norm}'")
    norm = NORM_LAYERS[backbone_norm]
    if backbone == "teacher":
        if backbone_weights is not None:
            raise ValueError(f"backbone='teacher' starts from the teacher's weights: set backbone_weights=None, "
                             f"not '{backbone_weights}'")
        if trunk is None:
            raise ValueError("backbone='teacher' needs the teacher's image trunk (ovclip.teacher.image_trunk)")
        body = trunk_fpn(trunk, fpn_channels, fpn_levels, trainable_layers, backbone_norm)
    elif backbone.startswith("mobilenet"):
        body = mobilenet_fpn(backbone, backbone_weights, fpn_channels, norm, fpn_levels)
    else:
        if fpn_channels != 256:
            raise ValueError("torchvision's ResNet-FPN has 256 channels; fpn_channels applies to MobileNet backbones")
        body = resnet_fpn_backbone(backbone_name=backbone, weights=backbone_weights,
                                   trainable_layers=trainable_layers, **({"norm_layer": norm} if norm else {}))
    featmaps = sorted(body.body.return_layers.values())
    if roi_sampling_ratio is not None:
        kwargs["box_roi_pool"] = FastMultiScaleRoIAlign(featmaps, 7, roi_sampling_ratio)
    if backbone == "teacher" or backbone.startswith("mobilenet") or anchor_sizes is not None:
        # One size per level and one for the max-pool level: 32, 64, ... unless given.
        default = tuple(32 * 2 ** i for i in range(len(featmaps) + 1))
        sizes = tuple(anchor_sizes) if anchor_sizes is not None else default
        if len(sizes) != len(featmaps) + 1:
            raise ValueError(f"anchor_sizes needs {len(featmaps) + 1} sizes (one per feature level), got {sizes}")
        kwargs.setdefault("rpn_anchor_generator",
                          AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes)))
    kwargs.setdefault("box_roi_pool", FastMultiScaleRoIAlign(featmaps, 7, 2))  # torchvision's default
    if box_head_dim != 1024 or body.out_channels != 256:
        kwargs["box_head"] = TwoMLPHead(body.out_channels * 7 * 7, box_head_dim)
    return ViLD(body, text, mask_featmaps=featmaps, **kwargs)
