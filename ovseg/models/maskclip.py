"""MaskCLIP: the teacher's dense embeddings classified against the vocabulary's text embeddings (no training)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ovclip.dense import classify_dense, dense_embeddings
from ovclip.options import with_defaults
from ovclip.resize import short_side_of
from ovclip.classifier import VocabularyEmbeddings
from ovclip.teacher import load_teacher
from ovclip.vocabulary import Vocabulary

from ..registry import MODELS
from .common import SegmentationModel, infer_logits

INFERENCE_DEFAULTS = {"mode": "whole", "crop_size": None, "stride": None, "short_side": None}


def check_inference(inference: Optional[dict]) -> dict:
    """The inference settings with defaults: whole image at its own size."""
    return with_defaults("inference", inference, INFERENCE_DEFAULTS, ValueError)


class DenseTeacher:
    """MaskCLIP's per-pixel scores of a teacher for the vocabulary of `text` (a plain object: never trained or
    saved; it follows `text`'s vocabulary).

    Prompt denoising and key smoothing refine each sliding window (or the whole image) on its own, and the
    windows' scores are averaged, as in MaskCLIP's code (they are part of its decode head). `classes`: which
    classes MaskCLIP chooses among: "all", or "novel", the vocabulary's novel classes when it has any, as
    when it labels the pixels that base ground truth leaves unlabelled (MaskCLIP+'s `unlabeled_cats`):
    denoising and smoothing then see those classes only. `logit_scale` multiplies the cosine similarities
    (CLIP's own logit scale unless given: it sets how peaked the softmax is for prompt denoising).
    """

    def __init__(self, text: VocabularyEmbeddings, key_smoothing: Optional[float] = None,
                 prompt_denoising: Optional[float] = None, inference: Optional[dict] = None,
                 logit_scale: Optional[float] = None, classes: str = "all"):
        if classes not in ("all", "novel"):
            raise ValueError(f"the classes MaskCLIP chooses among must be 'all' or 'novel', not '{classes}'")
        self.text, self.teacher, self.class_set = text, text.teacher, classes
        self.key_smoothing, self.prompt_denoising = key_smoothing, prompt_denoising
        self.inference = check_inference(inference)
        self.logit_scale = logit_scale or float(self.teacher.model.logit_scale.exp())

    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary classified (its owner's)."""
        return self.text.vocabulary

    @property
    def classes(self) -> Optional[list[int]]:
        """Positions of the classes MaskCLIP chooses among, None for all of them."""
        vocab = self.vocabulary
        if self.class_set == "novel" and vocab.split is not None and "novel" in vocab.split:
            return vocab.novel
        return None

    def text_embeddings(self) -> Tensor:
        """(K', D) unit text embeddings of the classes chosen among."""
        classes, text = self.classes, self.text.embeddings()
        return text if classes is None else text[classes]

    def window_scores(self, image: Tensor, text_embeddings: Optional[Tensor] = None) -> Tensor:
        """(K', h, w) scores of one window at the teacher's stride, against `text_embeddings` (an exported
        graph's input) or those of the classes chosen among."""
        dense = dense_embeddings(self.teacher, image, short_side=short_side_of(image))
        text = self.text_embeddings() if text_embeddings is None else text_embeddings
        return classify_dense(dense, text.to(dense.embeddings.device), self.logit_scale,
                              key_smoothing=self.key_smoothing, prompt_denoising=self.prompt_denoising)

    @torch.inference_mode()
    def scores(self, image: Tensor) -> Tensor:
        """(K', H, W) MaskCLIP scores of one image (uint8 or [0, 1] float) at its own size, for the K' classes
        it chooses among (`ovclip.dense.classify_dense`: logits, or, with key smoothing, smoothed class
        probabilities), averaged over the sliding windows as MaskCLIP's code does."""
        self.teacher.to(image.device)
        return infer_logits(self.window_scores, image, **self.inference).to(image.device)

    def probabilities(self, image: Tensor) -> Tensor:
        """(K, H, W) class probabilities over the whole vocabulary (0 for classes outside `classes`):
        the softmax of the scores, or the key-smoothed scores themselves."""
        scores = self.scores(image)
        probs = scores if self.key_smoothing is not None else scores.softmax(dim=0)
        classes = self.classes
        if classes is None:
            return probs
        out = probs.new_zeros(len(self.vocabulary), *probs.shape[1:])
        out[classes] = probs
        return out


@MODELS.register_module()
class MaskCLIP(SegmentationModel):
    """Zero-shot segmentation by the teacher alone. `key_smoothing` and `prompt_denoising` (thresholds, or
    None to switch off) are MaskCLIP's two refinements; `inference` selects whole-image or sliding-window
    inference (mode, crop_size, stride, short_side); `logit_scale` multiplies the cosine similarities
    (CLIP's own by default)."""

    def __init__(self, teacher: "str | dict", vocabulary: "str | Sequence[str] | Vocabulary",
                 templates: "str | Sequence[str] | dict" = "maskclip", key_smoothing: Optional[float] = None,
                 prompt_denoising: Optional[float] = None, inference: Optional[dict] = None,
                 logit_scale: Optional[float] = None, teacher_precision: str = "fp32",
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.text = VocabularyEmbeddings(load_teacher(teacher, precision=teacher_precision), vocabulary, templates)
        self.dense = DenseTeacher(self.text, key_smoothing, prompt_denoising, inference, logit_scale)

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes segmented now."""
        return self.text.vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Segment these classes from now on (one text-encoder pass, cached, at the next use)."""
        return self.text.set_vocabulary(vocabulary)

    def loss(self, inputs: Sequence[Tensor], data_samples: Sequence[dict]) -> dict[str, Tensor]:
        """MaskCLIP has nothing to train."""
        raise RuntimeError("MaskCLIP is zero-shot and has nothing to train: evaluate it with tools/test.py "
                           "(no checkpoint needed), or train a MaskCLIP+ student on its pseudo-labels")

    def logits(self, image: Tensor) -> Tensor:
        """(K, H, W) MaskCLIP scores of one image at its own size (their argmax is the prediction)."""
        return self.dense.scores(image)

    def probabilities(self, image: Tensor) -> Tensor:
        """(K, H, W) class probabilities (the key-smoothed scores themselves when key smoothing is on)."""
        return self.dense.probabilities(image)
