"""The Python API: `Segmenter.from_config(CONFIG, CHECKPOINT).predict(image, vocabulary)`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ovclip.demo import require_checkpoint
from ovclip.engine import build_model
from ovclip.io import as_image_tensor
from ovclip.results import Segmentation
from ovclip.vocabulary import LastVocabulary, Vocabulary, load_vocabulary


class Segmenter:
    """An open-vocabulary segmenter (MaskCLIP, MaskCLIP+ or another ovseg model) that labels any classes
    named in text."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.device = device
        self._last = LastVocabulary()

    @classmethod
    def from_config(cls, config: "str | Path", checkpoint: "str | Path | None" = None, device: str = "cpu",
                    cfg_options: Optional[dict] = None, allow_untrained: bool = False) -> "Segmenter":
        """Build the config's model and load a checkpoint's weights (weights_only); zero-shot models
        (MaskCLIP) need none, for a model with trainable weights (MaskCLIP+, mask proposals) no checkpoint is
        a ConfigError, unless `allow_untrained` asks for the untrained model."""
        import ovseg.models  # noqa: F401 - registers the segmenters

        model = build_model(config, checkpoint, cfg_options)
        if checkpoint is None and not allow_untrained:
            require_checkpoint(model, config)
        return cls(model, device)

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes segmented now."""
        return self.model.vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Segment these classes from now on ('cat, dog|puppy', a builtin name, a file, a list); the same text
        or list of names as the last call is not parsed again."""
        known = self._last.recall(vocabulary, self.model.vocabulary)
        if known is not None:
            return known
        vocab = self.model.set_vocabulary(load_vocabulary(vocabulary))
        self._last.remember(vocabulary, self.model.vocabulary)
        return vocab

    @torch.inference_mode()
    def predict(self, image: Any, vocabulary: "str | Sequence[str] | Vocabulary | None" = None) -> Segmentation:
        """Label every pixel of one image (path, PIL image, array or tensor) with a vocabulary class."""
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        img = as_image_tensor(image).to(self.device)
        scores, labels = self.model.probabilities(img).float().max(dim=0)
        return Segmentation(labels.cpu(), scores.cpu(), list(self.vocabulary.names))
