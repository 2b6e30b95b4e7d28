"""OV-DETR (Zang et al., ECCV 2022; reference code yuhangzang/OV-DETR, models/model.py `OVDETR`,
models/matcher.py `OVHungarianMatcher`, models/set_criterion.py `OVSetCriterion`) and its DETR-text
baseline, on the Deformable DETR parts of `ovd.models.detr`.

OV-DETR (`conditional=True`): the object queries are conditioned on CLIP embeddings. Per training batch,
the classes present (shuffled, at most `max_len`) are padded with absent ones up to `max_len - 3`; each is
represented by its text embedding (probability `prob`) or by the teacher's image embedding of a random
annotated box of that class (the class bank, `ovd.data.class_bank`); projected to the query width
(`patch2query` / `patch2query_img`), each is added to all N learned queries, giving R x N queries whose
self-attention is block-diagonal. A query's single logit says whether its box matches its conditioning
embedding: the Hungarian matching runs per class block against that class's boxes only, with a sigmoid
focal loss, L1 + GIoU box losses and, on the matched queries, the squared error between the query's
projected, normalised embedding (`feature_align`) and the conditioning embedding (the reference's
`loss_embed`: MSE, summed over dimensions; the paper writes L1). Every decoder layer is supervised
(auxiliary losses). At inference the queries are conditioned on each class of the vocabulary, in batches
of `eval_batch_classes` classes sharing one encoder pass, and the best `detections_per_img` (query, class)
scores over all batches are kept (no NMS).

DETR-text (`conditional=False`): the same detector with N unconditioned queries whose embeddings are
classified by cosine with the text embeddings (the shared classifier, over a temperature, plus a learned
bias: sigmoid scores), trained with focal loss over the base classes: ViLD-text's analogue.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import box_convert, clip_boxes_to_image

from ovclip.classifier import OpenVocabularyClassifier, VocabularyEmbeddings, check_gt_classes
from ovclip.io import to_unit_float
from ovclip.options import with_defaults
from ovclip.teacher import image_trunk, load_teacher
from ovclip.vocabulary import Vocabulary

from ..registry import MODELS
from .backbones import NORM_LAYERS, trunk_fpn
from .deformable import DeformableTransformer, sine_position_encoding
from .detector import prediction_outputs
from .detr import box_losses, focal_class_cost, focal_loss, match

# OV-DETR's main.py defaults: loss weights (cls / bbox / giou / feature_loss_coef) and matching costs
LOSS_DEFAULTS = {"class": 3.0, "bbox": 5.0, "giou": 2.0, "embed": 2.0}
MATCH_DEFAULTS = {"class": 3.0, "bbox": 5.0, "giou": 2.0}
CONDITIONING_DEFAULTS = {"max_len": 15, "prob": 0.5, "classes": "all", "class_bank": None}
TRANSFORMER_DEFAULTS = {"d_model": 256, "encoder_layers": 6, "decoder_layers": 6, "ffn_dim": 1024, "heads": 8,
                        "points": 4, "dropout": 0.1, "num_queries": 300, "box_refine": True, "two_stage": True}
PRIOR_PROB = 0.01


def _scales(min_size: "int | Sequence[int]") -> tuple[int, ...]:
    """`min_size` as the image transform takes it: one shorter side, or several (training draws one per image,
    Deformable DETR's multi-scale resize; evaluation uses the last)."""
    scales = (min_size,) if isinstance(min_size, int) else tuple(min_size)
    if not scales or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in scales):
        raise ValueError(f"min_size must be a positive integer or a list of them, not {min_size!r}")
    return scales


@MODELS.register_module()
class OVDETRDetector(BaseModel):
    """OV-DETR (`conditional=True`) or DETR-text (`conditional=False`) as an mmengine model; the teacher is
    kept outside the module tree (never trained or saved)."""

    def __init__(self, teacher: "str | dict", vocabulary: "str | Sequence[str] | Vocabulary",
                 templates: "str | Sequence[str] | dict" = "vild", conditional: bool = True,
                 backbone: str = "resnet50", backbone_weights: Optional[str] = None, trainable_layers: int = 3,
                 backbone_norm: str = "frozen_bn", fpn_channels: int = 256, fpn_levels: int = 3,
                 transformer: Optional[dict] = None, conditioning: Optional[dict] = None,
                 loss_weights: Optional[dict] = None, match_costs: Optional[dict] = None, temperature: float = 0.05,
                 gt_classes: str = "base", min_size: "int | tuple" = 800, max_size: int = 1333,
                 detections_per_img: int = 100, eval_batch_classes: int = 15, teacher_precision: str = "fp32",
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        t = with_defaults("transformer", transformer, TRANSFORMER_DEFAULTS, ValueError)
        self.conditioning = with_defaults("conditioning", conditioning, CONDITIONING_DEFAULTS, ValueError)
        self.loss_weights = with_defaults("loss_weights", loss_weights, LOSS_DEFAULTS, ValueError)
        self.match_costs = with_defaults("match_costs", match_costs, MATCH_DEFAULTS, ValueError)
        if self.conditioning["classes"] not in ("base", "all"):
            raise ValueError(f"conditioning.classes must be 'base' or 'all', not '{self.conditioning['classes']}'")
        self.conditional, self.gt_classes = conditional, check_gt_classes(gt_classes)
        self.detections_per_img, self.eval_batch_classes = detections_per_img, eval_batch_classes
        self.teacher = load_teacher(teacher, device="cpu", precision=teacher_precision)
        self.text = VocabularyEmbeddings(self.teacher, vocabulary, templates)
        self.classifier = OpenVocabularyClassifier(self.text, temperature)
        d, dim = t["d_model"], self.teacher.embed_dim
        mean, std = ((list(self.teacher.mean), list(self.teacher.std)) if backbone == "teacher"
                     else ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        self.transform = GeneralizedRCNNTransform(_scales(min_size), max_size, mean, std)
        self.backbone = self._build_backbone(backbone, backbone_weights, trainable_layers, backbone_norm,
                                             fpn_channels, fpn_levels)
        levels = fpn_levels + 1  # the FPN's levels and its max-pool level
        self.input_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(self.backbone.out_channels, d, 1),
                                                      nn.GroupNorm(math.gcd(d, 32), d)) for _ in range(levels))
        self.transformer = DeformableTransformer(d, levels, t["encoder_layers"], t["decoder_layers"], t["ffn_dim"],
                                                 t["heads"], t["points"], t["dropout"], t["num_queries"],
                                                 t["box_refine"], t["two_stage"])
        layers = t["decoder_layers"]
        # per decoder layer (copies with box refinement, as the reference clones them; else one shared)
        align = nn.Linear(d, dim)  # initialised as the reference's (Xavier, zero bias)
        nn.init.xavier_uniform_(align.weight)
        nn.init.zeros_(align.bias)
        self.feature_align = _per_layer(align, layers, t["box_refine"])
        bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        if conditional:
            head = nn.Linear(d, 1)
            nn.init.constant_(head.bias, bias)
            self.class_embed = _per_layer(head, layers, t["box_refine"])
            self.patch2query, self.patch2query_img = nn.Linear(dim, d), nn.Linear(dim, d)
            nn.init.xavier_uniform_(self.patch2query.weight)
            nn.init.constant_(self.patch2query.bias, 0)
        else:
            self.logit_bias = nn.Parameter(torch.tensor(bias))
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self._bank: Optional[tuple[Vocabulary, dict[int, Tensor]]] = None  # (the vocabulary it was matched to, bank)

    def _build_backbone(self, backbone: str, weights: Optional[str], trainable_layers: int, norm: str,
                        fpn_channels: int, levels: int) -> nn.Module:
        if norm not in NORM_LAYERS:
            raise ValueError(f"backbone_norm must be one of {sorted(NORM_LAYERS)}, not '{norm}'")
        if backbone == "teacher":
            return trunk_fpn(image_trunk(self.teacher), fpn_channels, levels, trainable_layers, norm)
        layer = NORM_LAYERS[norm]
        return resnet_fpn_backbone(backbone_name=backbone, weights=weights, trainable_layers=trainable_layers,
                                   returned_layers=list(range(5 - levels, 5)),
                                   **({"norm_layer": layer} if layer else {}))

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes detected now."""
        return self.text.vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Detect these classes from now on: one text-encoder pass (cached), no weight changes."""
        return self.text.set_vocabulary(vocabulary)

    # --- the network ---

    def encode(self, images: Sequence[Tensor], targets: Optional[list[dict]] = None) -> dict[str, Any]:
        """Resize, normalise and batch the images, run the backbone and the encoder."""
        image_list, targets = self.transform(list(images), targets)
        x = image_list.tensors
        mask = torch.ones(x.shape[0], *x.shape[-2:], dtype=torch.bool, device=x.device)
        for i, (h, w) in enumerate(image_list.image_sizes):
            mask[i, :h, :w] = False
        srcs, masks, pos = [], [], []
        for lvl, feature in enumerate(self.backbone(x).values()):
            m = F.interpolate(mask[None].float(), size=feature.shape[-2:])[0].bool()
            srcs.append(self.input_proj[lvl](feature))
            masks.append(m)
            pos.append(sine_position_encoding(m, srcs[-1].shape[1]))
        enc = self.transformer.encode(srcs, masks, pos)
        return {**enc, "image_sizes": image_list.image_sizes, "targets": targets}

    def decode(self, enc: dict[str, Any], condition: Optional[Tensor] = None) -> dict[str, Tensor]:
        """Every decoder layer's outputs for the queries, repeated for every row of `condition` (R, d) added to
        their content (OV-DETR), or as they are: logits (layers, B, Q, 1 or C), boxes (layers, B, Q, 4; cxcywh
        in [0, 1] of each image), unit embeddings (layers, B, Q, D)."""
        out = self.transformer.decode(enc, condition)
        hs = out["hs"]
        embeddings = torch.stack([F.normalize(head(h), dim=-1) for head, h in zip(self.feature_align, hs)])
        if self.conditional:
            logits = torch.stack([head(h) for head, h in zip(self.class_embed, hs)])
        else:
            logits = self.classifier(embeddings) + self.logit_bias
        return {"logits": logits, "boxes": out["boxes"], "embeddings": embeddings}

    # --- training ---

    def forward(self, inputs: Sequence[Tensor], data_samples: Optional[Sequence[dict]] = None,
                mode: str = "tensor") -> Any:
        """mode 'loss' -> dict of losses; 'predict' -> one dict of detections per image (with its image_id);
        'tensor' -> the detections alone."""
        images = [to_unit_float(x) for x in inputs]
        if mode == "loss":
            if data_samples is None:
                raise ValueError("mode='loss' needs data_samples with boxes and labels")
            targets = [{"boxes": ds["boxes"], "labels": ds["labels"]} for ds in data_samples]
            return self.loss(images, targets)
        return prediction_outputs(self.predict(images), data_samples, mode)

    def loss(self, images: Sequence[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """The set losses of every decoder layer (the last one unsuffixed, the others `_0`, `_1`, ...)."""
        enc = self.encode(images, targets)
        gts = []
        for t, (h, w) in zip(enc["targets"], enc["image_sizes"]):
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=t["boxes"].device)
            gts.append((box_convert(t["boxes"].float(), "xyxy", "cxcywh") / scale, t["labels"].long()))
        losses, num_boxes = self._conditional_loss(enc, gts) if self.conditional else self._text_loss(enc, gts)
        if "enc_logits" in enc:  # two-stage: the encoder's class-agnostic proposals, matched to every box
            losses.update(self._proposal_loss(enc, gts, num_boxes))
        return losses

    def _proposal_loss(self, enc: dict[str, Any], gts: list[tuple[Tensor, Tensor]], num_boxes: float
                       ) -> dict[str, Tensor]:
        """The two-stage encoder's losses (`_enc`): one class ("object"), every ground-truth box its target,
        as the reference's binary targets with its original matcher, divided by the decoder's `num_boxes` (as
        the reference: with conditions, the boxes of the sampled classes alone)."""
        logits, boxes = enc["enc_logits"], enc["enc_boxes_unact"].sigmoid()
        matches = [match(focal_class_cost(logits[i, :, 0].sigmoid())[:, None].expand(-1, len(b)), boxes[i], b,
                         self.match_costs) for i, (b, _) in enumerate(gts)]
        part = self._set_losses(boxes, logits, matches, gts, num_boxes)
        return {f"{k}_enc": v for k, v in part.items()}

    def _conditional_loss(self, enc: dict[str, Any], gts: list[tuple[Tensor, Tensor]]
                          ) -> tuple[dict[str, Tensor], float]:
        classes, conditions, queries = self.sample_conditions([g[1] for g in gts], enc["memory"].device)
        out = self.decode(enc, queries)
        n = out["boxes"].shape[2] // len(classes)  # queries per condition
        present = torch.cat([labels for _, labels in gts]).cpu()
        num_boxes = _num_boxes(int(torch.isin(present, classes.cpu()).sum()), out["logits"].device)
        losses: dict[str, Tensor] = {}
        for layer in range(len(out["logits"])):
            matches = []
            for i, (boxes, labels) in enumerate(gts):
                rows, cols = [], []
                for k, c in enumerate(classes.tolist()):
                    g = (labels == c).nonzero().flatten().cpu()
                    block = slice(k * n, (k + 1) * n)
                    cost = focal_class_cost(out["logits"][layer, i, block, 0].sigmoid())[:, None].expand(-1, len(g))
                    r, j = match(cost, out["boxes"][layer, i, block], boxes[g], self.match_costs)
                    rows.append(r + k * n)
                    cols.append(g[j])
                matches.append((torch.cat(rows), torch.cat(cols)))
            part = self._set_losses(out["boxes"][layer], out["logits"][layer], matches, gts, num_boxes)
            device = out["embeddings"].device
            q_emb = torch.cat([out["embeddings"][layer, i, q.to(device)] for i, (q, _) in enumerate(matches)])
            c_emb = torch.cat([conditions[q.to(device) // n] for q, _ in matches])
            part["loss_embed"] = self.loss_weights["embed"] * F.mse_loss(q_emb, c_emb, reduction="sum") / num_boxes
            losses.update(_suffixed(part, layer, len(out["logits"])))
        return losses, num_boxes

    def _text_loss(self, enc: dict[str, Any], gts: list[tuple[Tensor, Tensor]]
                   ) -> tuple[dict[str, Tensor], float]:
        out = self.decode(enc)
        columns = self.classifier.training_columns(self.gt_classes).to(out["logits"].device)
        column_of = torch.full((self.classifier.num_classes,), -1, dtype=torch.long)
        column_of[columns.cpu()] = torch.arange(len(columns))
        gts = [(boxes[column_of[labels.cpu()] >= 0], labels[column_of[labels.cpu()] >= 0]) for boxes, labels in gts]
        num_boxes = _num_boxes(sum(len(labels) for _, labels in gts), out["logits"].device)
        losses: dict[str, Tensor] = {}
        for layer in range(len(out["logits"])):
            logits = out["logits"][layer][..., columns]
            matches = []
            for i, (boxes, labels) in enumerate(gts):
                cost = focal_class_cost(logits[i].sigmoid())[:, column_of[labels.cpu()].to(logits.device)]
                matches.append(match(cost, out["boxes"][layer, i], boxes, self.match_costs))
            part = self._set_losses(out["boxes"][layer], logits, matches, gts, num_boxes,
                                    [column_of[gts[i][1][g].cpu()] for i, (_, g) in enumerate(matches)])
            losses.update(_suffixed(part, layer, len(out["logits"])))
        return losses, num_boxes

    def _set_losses(self, boxes: Tensor, logits: Tensor, matches: list[tuple[Tensor, Tensor]],
                    gts: list[tuple[Tensor, Tensor]], num_boxes: float,
                    columns: Optional[list[Tensor]] = None) -> dict[str, Tensor]:
        """One layer's focal classification loss over every query and its box losses over the matched ones.
        A matched query's target is 1 in its pair's column of `columns` (per image), or in the single column
        of a binary logit (OV-DETR's "matches its condition", the encoder's "object")."""
        w = self.loss_weights
        target = torch.zeros_like(logits)
        for i, (q, _) in enumerate(matches):
            column = 0 if columns is None else columns[i].to(target.device)
            target[i, q.to(target.device), column] = 1.0
        pred = torch.cat([boxes[i, q.to(boxes.device)] for i, (q, _) in enumerate(matches)])
        gt = torch.cat([gts[i][0][g].to(boxes.device) for i, (_, g) in enumerate(matches)])
        l1, giou = box_losses(pred, gt, num_boxes)
        return {"loss_ce": w["class"] * focal_loss(logits, target, num_boxes), "loss_bbox": w["bbox"] * l1,
                "loss_giou": w["giou"] * giou}

    def sample_conditions(self, labels: Sequence[Tensor],
                          device: "torch.device | str") -> tuple[Tensor, Tensor, Tensor]:
        """OV-DETR's conditions for one training batch: (R,) vocabulary positions (the classes present,
        shuffled, at most max_len, padded with absent ones up to max_len - 3), their (R, D) unit CLIP
        embeddings (text with probability `prob`, else a random class-bank image embedding of that class)
        and the (R, d) query offsets made from them."""
        cfg = self.conditioning
        pool = (self.classifier.base_mask if cfg["classes"] == "base" else torch.ones_like(self.classifier.base_mask))
        pool = pool.nonzero().flatten().cpu()
        present = torch.unique(torch.cat([lab.cpu() for lab in labels])) if labels else torch.zeros(0, dtype=torch.long)
        present = present[torch.isin(present, pool)]
        chosen = present[torch.randperm(len(present))][: cfg["max_len"]]
        pad = cfg["max_len"] - 3 - len(chosen)
        if pad > 0:
            absent = pool[~torch.isin(pool, chosen)]
            chosen = torch.cat([chosen, absent[torch.randperm(len(absent))][:pad]])
        text = self.classifier.text_embeddings[chosen.to(self.classifier.text_embeddings.device)].to(device)
        use_text = torch.rand(len(chosen)) < cfg["prob"]
        bank = self.class_bank()
        image = text.clone()
        for k, c in enumerate(chosen.tolist()):
            examples = bank.get(c)
            if examples is None or not len(examples):
                use_text[k] = True  # no image of this class to condition on
                continue
            image[k] = examples[torch.randint(len(examples), (1,))].to(device)[0]
        image = F.normalize(image, dim=-1)
        mask = use_text.to(device).float()[:, None]
        conditions = (text * mask + image * (1 - mask)).detach()
        queries = self.patch2query(text) * mask + self.patch2query_img(image) * (1 - mask)
        return chosen.to(device), conditions, queries

    def class_bank(self) -> dict[int, Tensor]:
        """Vocabulary position -> (n, D) teacher image embeddings of annotated boxes of that class, from the
        file `conditioning.class_bank` (`ovd.data.class_bank`, matched by class name to the current
        vocabulary); empty without one (text conditions only)."""
        path = self.conditioning["class_bank"]
        if path is None:
            return {}
        if self._bank is None or self._bank[0] != self.vocabulary:  # positions follow the vocabulary
            from ..data.class_bank import load_class_bank
            self._bank = (self.vocabulary, load_class_bank(path, self.vocabulary, self.teacher))
        return self._bank[1]

    # --- inference ---

    @torch.no_grad()
    def predict(self, images: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """The best `detections_per_img` detections of each image, boxes in its own pixels."""
        original = [tuple(im.shape[-2:]) for im in images]
        enc = self.encode(images)
        if self.conditional:
            scores, boxes, classes = self._conditional_scores(enc)
        else:
            out = self.decode(enc)
            scores, boxes = out["logits"][-1].sigmoid(), out["boxes"][-1]
            classes = torch.arange(scores.shape[-1], device=scores.device)
        results = []
        for i, (h, w) in enumerate(enc["image_sizes"]):
            flat = scores[i].flatten()
            top, index = flat.topk(min(self.detections_per_img, len(flat)))
            query, column = index // scores.shape[-1], index % scores.shape[-1]
            xyxy = box_convert(boxes[i][query], "cxcywh", "xyxy") * torch.tensor([w, h, w, h], device=top.device)
            xyxy = clip_boxes_to_image(xyxy, (h, w))  # the reference leaves them unclipped
            results.append({"boxes": xyxy, "scores": top, "labels": classes[column] if not self.conditional
                            else classes[query]})
        return self.transform.postprocess(results, enc["image_sizes"], original)

    def _conditional_scores(self, enc: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Queries conditioned on every vocabulary class, `eval_batch_classes` classes per decoder pass:
        (B, C x N, 1) scores, (B, C x N, 4) boxes and each query's class."""
        text = self.classifier.text_embeddings.to(enc["memory"].device)
        scores, boxes = [], []
        for start in range(0, len(text), self.eval_batch_classes):
            chunk = text[start:start + self.eval_batch_classes]
            out = self.decode(enc, self.patch2query(chunk))
            n = out["boxes"].shape[2] // len(chunk)  # queries per condition
            scores.append(out["logits"][-1].sigmoid())
            boxes.append(out["boxes"][-1])
        classes = torch.arange(len(text), device=text.device).repeat_interleave(n)
        return torch.cat(scores, 1), torch.cat(boxes, 1), classes


def _per_layer(head: nn.Module, layers: int, copies: bool) -> nn.ModuleList:
    """One head per decoder layer: copies of `head` (trained apart) or `head` itself shared."""
    return nn.ModuleList(copy.deepcopy(head) if copies else head for _ in range(layers))


def _num_boxes(count: int, device: "torch.device | str") -> float:
    """The boxes the losses are divided by: averaged over the processes of a distributed run, at least 1."""
    n = torch.tensor([float(count)], device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(n)
        n /= torch.distributed.get_world_size()
    return max(float(n), 1.0)


def _suffixed(losses: dict[str, Tensor], layer: int, layers: int) -> dict[str, Tensor]:
    """The last decoder layer's losses as they are, the others' with `_<layer>` (DETR's aux losses)."""
    return losses if layer == layers - 1 else {f"{k}_{layer}": v for k, v in losses.items()}
