"""The open-vocabulary classifier every student uses, and the one place its class embeddings come from.

- A text source says how a vocabulary becomes class embeddings: hand-written prompt templates
  (`PromptTemplates`, ViLD / MaskCLIP) or learned prompts (`ovclip.learned_prompts.LearnedPrompts`, DetPro).
- `VocabularyEmbeddings` owns teacher + current vocabulary + text source for one model.
  `set_vocabulary(vocabulary)` means the same in every model: a vocabulary spec ('cat, dog', a list, a
  builtin name, a file or a `Vocabulary`), embedded lazily, when a classifier first needs it, so a model
  built for one vocabulary and switched to another before its first forward never embeds the first.
- `OpenVocabularyClassifier` (an nn.Module) scores unit embeddings by cosine with the unit text embeddings
  (a non-persistent buffer: a vocabulary swap changes no weight), divided by a temperature, with an
  optional learned background embedding (column 0), the vocabulary's base mask, and the rule for which
  columns a training loss may use.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .learned_prompts import LearnedPrompts
from .teacher import Teacher
from .text import text_embeddings
from .vocabulary import Vocabulary, load_vocabulary

GT_CLASSES = ("base", "all")


@runtime_checkable
class TextSource(Protocol):
    """Where class embeddings come from: (teacher, vocabulary) -> unit (C, D) embeddings."""

    def __call__(self, teacher: Teacher, vocabulary: Vocabulary) -> Tensor:
        ...


class PromptTemplates:
    """Hand-written prompts: each class averages its templates x synonyms (`ovclip.text.text_embeddings`,
    cached on disk)."""

    def __init__(self, templates: "str | Sequence[str]" = "vild"):
        self.templates = templates

    def __call__(self, teacher: Teacher, vocabulary: Vocabulary) -> Tensor:
        return text_embeddings(teacher, vocabulary, self.templates)

    def __repr__(self) -> str:
        return f"PromptTemplates({self.templates!r})"


def build_text_source(spec: "str | Sequence[str] | dict | TextSource") -> TextSource:
    """A text source from a config value: a template set's name or a list of templates,
    `dict(type="templates", templates=...)`, `dict(type="learned", file="prompts.safetensors")` (DetPro's
    learned prompts, `ovclip.learned_prompts`), or a text source itself."""
    if isinstance(spec, (str, list, tuple)):
        return PromptTemplates(spec if isinstance(spec, str) else list(spec))
    if isinstance(spec, dict):
        kind, rest = spec.get("type"), {k: v for k, v in spec.items() if k != "type"}
        if kind == "templates" and set(rest) <= {"templates"}:
            return PromptTemplates(**rest)
        if kind == "learned" and set(rest) == {"file"}:
            return LearnedPrompts(rest["file"])
        raise ValueError(f"a text source dict is dict(type='templates', templates=...) or "
                         f"dict(type='learned', file=...), not {spec}")
    if isinstance(spec, TextSource):
        return spec
    raise TypeError(f"a text source is a template set's name, a list of templates, a dict or a TextSource, "
                    f"not {type(spec).__name__}")


def base_mask_of(vocabulary: Vocabulary) -> Optional[Tensor]:
    """Bool (C,) of the vocabulary's base classes, None without a split."""
    return None if vocabulary.split is None else torch.tensor([s == "base" for s in vocabulary.split])


def check_gt_classes(gt_classes: str) -> str:
    """'base' (train over the base classes only: a novel class is never a negative) or 'all' (an oracle)."""
    if gt_classes not in GT_CLASSES:
        raise ValueError(f"gt_classes must be 'base' or 'all', not '{gt_classes}'")
    return gt_classes


class VocabularyEmbeddings:
    """A model's teacher, current vocabulary and text source; the classifiers built on it follow its
    vocabulary. A plain object, so the teacher never enters a student's state dict or DDP."""

    def __init__(self, teacher: Teacher, vocabulary: "str | Sequence[str] | Vocabulary",
                 text: "str | Sequence[str] | dict | TextSource" = "vild"):
        self.teacher = teacher
        self.source = build_text_source(text)
        self._vocabulary = load_vocabulary(vocabulary)
        self._embeddings: Optional[Tensor] = None
        self.version = 0  # bumped at every vocabulary change; classifiers compare it to theirs

    @property
    def vocabulary(self) -> Vocabulary:
        """The classes recognised now."""
        return self._vocabulary

    def set_vocabulary(self, vocabulary: "str | Sequence[str] | Vocabulary") -> Vocabulary:
        """Recognise these classes from now on; the text encoder runs when an embedding is first needed."""
        vocab = load_vocabulary(vocabulary)
        if vocab != self._vocabulary or self._embeddings is None:
            self._vocabulary, self._embeddings = vocab, None
            self.version += 1
        return vocab

    def embeddings(self) -> Tensor:
        """(C, D) float embeddings of the vocabulary's classes, as the text source gives them (unit length;
        computed once per vocabulary)."""
        if self._embeddings is None:
            emb = self.source(self.teacher, self._vocabulary)
            if emb.ndim != 2 or emb.shape[0] != len(self._vocabulary):
                raise ValueError(f"text source {self.source!r} gave {tuple(emb.shape)} embeddings for "
                                 f"{len(self._vocabulary)} classes")
            self._embeddings = emb.detach().float()
        return self._embeddings

    def base_mask(self) -> Optional[Tensor]:
        """Bool (C,) of the base classes, None without a split."""
        return base_mask_of(self._vocabulary)


class OpenVocabularyClassifier(nn.Module):
    """Cosine of unit embeddings with the vocabulary's unit text embeddings, over a temperature.

    `text`: a `VocabularyEmbeddings` to follow (its vocabulary changes reach this classifier before its
    next use) or fixed (C, D) embeddings (with `base_mask`; None: every class is base). `background`:
    the learned background embedding's initial value (column 0 of the logits), or None for no background.
    """

    def __init__(self, text: "VocabularyEmbeddings | Tensor", temperature: float,
                 background: Optional[Tensor] = None, base_mask: Optional[Tensor] = None):
        super().__init__()
        dim = text.shape[1] if isinstance(text, Tensor) else text.teacher.embed_dim
        self.temperature = temperature
        self.background = None if background is None else nn.Parameter(background.detach().clone())
        self.register_buffer("_text", torch.empty(0, dim), persistent=False)
        self.register_buffer("_base", torch.empty(0, dtype=torch.bool), persistent=False)
        self.source: Optional[VocabularyEmbeddings] = None
        self._version = -1
        if isinstance(text, Tensor):
            self.set_text_embeddings(text, base_mask)
        else:
            self.source = text

    @property
    def embed_dim(self) -> int:
        """Size of the embeddings it classifies."""
        return self._text.shape[1]

    def set_text_embeddings(self, text_embeddings: Tensor, base_mask: Optional[Tensor] = None) -> None:
        """Classify against these (C, D) embeddings (normalised here) from now on."""
        if text_embeddings.ndim != 2 or text_embeddings.shape[0] == 0 or text_embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"text embeddings must be (C>0, {self.embed_dim}), got {tuple(text_embeddings.shape)}")
        mask = torch.ones(len(text_embeddings), dtype=torch.bool) if base_mask is None else base_mask.bool()
        if mask.shape != (len(text_embeddings),):
            raise ValueError("base_mask needs one entry per class")
        self._text = F.normalize(text_embeddings.float(), dim=-1).to(self._text.device)
        self._base = mask.to(self._text.device)

    @contextmanager
    def text_inputs(self) -> Iterator["OpenVocabularyClassifier"]:
        """Within it, `set_text_embeddings` may be called freely (an exported graph sets its text-embedding
        input at every run); on leaving, the classifier's embeddings and the vocabulary it follows are as
        before."""
        self._sync()  # else the first use would replace the embeddings set within by its vocabulary's
        saved = (self._text, self._base, self._version)
        try:
            yield self
        finally:
            self._text, self._base, self._version = saved

    def _sync(self) -> None:
        if self.source is not None and self._version != self.source.version:
            # normal tensors even when the first use is under torch.inference_mode (a predict call): they
            # must serve a later training step too
            with torch.inference_mode(False):
                self.set_text_embeddings(self.source.embeddings().clone(), self.source.base_mask())
            self._version = self.source.version

    @property
    def text_embeddings(self) -> Tensor:
        """(C, D) unit text embeddings of the current vocabulary."""
        self._sync()
        return self._text

    @property
    def base_mask(self) -> Tensor:
        """Bool (C,): which classes are base (all of them without a split)."""
        self._sync()
        return self._base

    @property
    def num_classes(self) -> int:
        """Classes in the current vocabulary (background not counted)."""
        return len(self.text_embeddings)

    def weights(self, classes: Optional[Tensor] = None) -> Tensor:
        """(1 + C', D) unit rows: the background first (if any), then the classes (or those at `classes`)."""
        text = self.text_embeddings if classes is None else self.text_embeddings[classes]
        if self.background is None:
            return text
        return torch.cat([F.normalize(self.background, dim=0)[None].to(text.dtype), text])

    def forward(self, embeddings: Tensor, dim: int = -1, classes: Optional[Tensor] = None,
                weights: Optional[Tensor] = None) -> Tensor:
        """Logits of unit embeddings (normalised along `dim`): cosine with `weights(classes)` over the
        temperature, the class axis replacing `dim`. `weights`: `weights(classes)` already computed, by a
        caller that scores many blocks of embeddings (at 21k classes the background's concatenation copies
        5 MB)."""
        w = self.weights(classes) if weights is None else weights
        dim = dim % embeddings.ndim
        # divided in place: the same numbers, without a second (N, C) tensor (at 21k classes, half the time)
        if dim == embeddings.ndim - 1:
            return (embeddings @ w.T).div_(self.temperature)
        letters = "abcdefghijlmnopq"[:embeddings.ndim]
        out = letters[:dim] + "k" + letters[dim + 1:]
        return torch.einsum(f"{letters},k{letters[dim]}->{out}", embeddings, w).div_(self.temperature)

    def training_columns(self, gt_classes: str = "base") -> Tensor:
        """Columns of the logits a training loss may use: the background (if any) and the base classes
        ('base': a novel class is never a negative, as ViLD and DetPro train), or every class ('all', an
        oracle trained with every class's labels)."""
        classes = self.base_mask if check_gt_classes(gt_classes) == "base" else torch.ones_like(self.base_mask)
        if self.background is not None:
            classes = torch.cat([classes.new_ones(1), classes])
        return classes.nonzero().flatten()
