"""DetPro's prompt-training data: the teacher's embeddings of proposals (the feature store ViLD distils),
each labelled by its IoU with the base-class ground truth of its image."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from ovclip.learned_prompts import BACKGROUND_IOU, IOU_BINS, assign_proposals, bin_masks, class_weights, sample_weights
from ovclip.store import FeatureStore
from ovclip.vocabulary import Vocabulary

from ..registry import DATASETS
from .coco import load_detection_annotations


@DATASETS.register_module()
class ProposalEmbeddings(Dataset):
    """One item per stored proposal that some IoU bin trains on: {"inputs": (D,) teacher embedding,
    "data_samples": {"label": base-class index or -1 (background), "weights": (bins,)}}.

    Per bin, as DetPro's detpro.sh runs (one training per bin): the foreground is the proposals whose best
    IoU with a base ground-truth box is in [low, high), the background a random `background_fraction` of
    those with IoU in `background_iou` (DetPro keeps 1 in 10), drawn with `seed`, afresh for each bin; a
    sample's weight in a bin is DetPro's class weight (`ovclip.learned_prompts.class_weights`) or 0 when
    the bin does not train on it. Only the base classes are labels: novel objects are never annotated.
    """

    def __init__(self, ann_file: str, img_dir: str, feature_store: str, vocabulary: "str | Vocabulary",
                 iou_bins: Sequence[Sequence[float]] = IOU_BINS, background_iou: Sequence[float] = BACKGROUND_IOU,
                 background_fraction: float = 0.1, seed: int = 0):
        records, vocab, _ = load_detection_annotations(ann_file, img_dir, vocabulary, train_classes="base")
        store = FeatureStore(feature_store)
        base = vocab.base
        to_base = {pos: i for i, pos in enumerate(base)}
        embeddings, labels, ious = [], [], []
        for rec in records:
            if rec.id not in store:
                continue
            boxes, emb = store[rec.id]
            gt_labels = torch.tensor([to_base[int(x)] for x in rec.labels], dtype=torch.long)
            lab, iou = assign_proposals(boxes, torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4),
                                        gt_labels)
            embeddings.append(emb.float())
            labels.append(lab)
            ious.append(iou)
        if not embeddings:
            raise ValueError(f"feature store {feature_store} holds none of the images of {ann_file}: embed the "
                             f"training images' proposals with tools/precompute.py first")
        self.embeddings = torch.cat(embeddings)
        ious_t = torch.cat(ious)
        fg_masks, bg_mask = bin_masks(ious_t, [tuple(b) for b in iou_bins], tuple(background_iou))
        g = torch.Generator().manual_seed(seed)
        weights = []
        all_labels = torch.cat(labels)
        for fg in fg_masks:
            bg = bg_mask & (torch.rand(len(bg_mask), generator=g) < background_fraction)
            lab = torch.where(fg, all_labels, torch.full_like(all_labels, -1))
            chosen = fg | bg
            w = torch.zeros(len(lab))
            w[chosen] = sample_weights(lab[chosen], class_weights(lab[chosen], len(base)))
            weights.append(w)
        self.weights = torch.stack(weights, dim=1)  # (N, bins)
        keep = self.weights.sum(1) > 0
        self.embeddings, self.weights = self.embeddings[keep], self.weights[keep]
        foreground = torch.stack(fg_masks).any(0)  # the bins lie above the background's IoU range
        self.labels = torch.where(foreground, all_labels, torch.full_like(all_labels, -1))[keep]
        self.vocabulary, self.base_classes = vocab, base
        trained = self.weights > 0  # (N, bins)
        self.counts = {"foreground": (trained & (self.labels >= 0)[:, None]).sum(0).tolist(),
                       "background": (trained & (self.labels < 0)[:, None]).sum(0).tolist()}

    def __len__(self) -> int:
        return len(self.embeddings)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"inputs": self.embeddings[i],
                "data_samples": {"label": int(self.labels[i]), "weights": self.weights[i]}}
