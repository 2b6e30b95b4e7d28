"""Learned prompts (DetPro, Du et al. CVPR 2022; reference code dyabel/detpro, prompt/coop_mini.py and
prompt/trainer.py): continuous context vectors in the text encoder's token-embedding space replace
hand-written templates.

- `PromptContext`: `bins` sets of `n_ctx` context vectors (DetPro: 8, drawn from N(0, 0.02^2)), shared by
  every class, placed before the class name as in 'X X X X X X X X cat.' (the class token at the end),
  run through the teacher's frozen text transformer; the feature is taken at the end-of-text token, as
  CLIP does. Only the context vectors learn.
- `assign_proposals` / `bin_masks`: proposals labelled by their IoU with the base ground truth; DetPro's
  context grading trains one context per foreground IoU bin ([0.5, 0.6) ... [0.9, 1.1), ground-truth
  boxes included at IoU 1) against the shared background proposals (IoU in [0.1, 0.5)).
- `detpro_loss`: foreground proposals, cross-entropy over the base classes; background proposals,
  cross-entropy to the uniform distribution over the base classes (DetPro's background interpretation:
  equal similarity to every class, no background class); both weighted by inverse class frequency
  (`class_weights`) and averaged by the weights, as the reference's 'soft' mode (the one its scripts run).
- `prompt_fit`: how well per-bin class embeddings fit the training proposals (DetPro's loss, foreground
  top-1): is a context under- or over-fitted, against the hand prompt's embeddings.
- `LearnedPrompts`: a saved context as a text source (`ovclip.classifier`): each bin's class embeddings
  normalised, averaged over the bins and renormalised (the reference's ensemble), so any vocabulary can
  still be embedded with the learned context.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torchvision.ops import box_iou

from .io import atomic_write
from .prompts import average_embeddings
from .teacher import Teacher
from .vocabulary import Vocabulary

IOU_BINS = ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.1))  # DetPro's detpro.sh
BACKGROUND_IOU = (0.1, 0.5)
PLACEHOLDER = "X"


class PromptContext(nn.Module):
    """Learnable context vectors (bins, n_ctx, width) before each class name, through the frozen text tower.
    The teacher is kept outside the module tree: never trained, saved or wrapped by DDP."""

    def __init__(self, teacher: Teacher, n_ctx: int = 8, bins: int = 1, init_std: float = 0.02):
        super().__init__()
        if n_ctx < 0 or bins < 1:
            raise ValueError(f"a prompt context needs n_ctx >= 0 and bins >= 1, not {n_ctx} and {bins}")
        self.teacher = [teacher]  # a list: not a submodule
        width = teacher.model.token_embedding.weight.shape[1]
        self.ctx = nn.Parameter(torch.randn(bins, n_ctx, width) * init_std)

    @property
    def n_ctx(self) -> int:
        """Context vectors per prompt."""
        return self.ctx.shape[1]

    @property
    def bins(self) -> int:
        """Separately learned contexts (DetPro's IoU bins)."""
        return self.ctx.shape[0]

    def prompts(self, names: Sequence[str]) -> list[str]:
        """'X X ... X name.' for each name: the placeholders' token embeddings are replaced by the context."""
        return [" ".join([PLACEHOLDER] * self.n_ctx + [name]) + "." for name in names]

    def forward(self, names: Sequence[str], bin: int = 0) -> Tensor:
        """Unit (len(names), D) text embeddings of 'ctx... name.' for each name, with the context of `bin`;
        differentiable with respect to that context only."""
        return self.encode(self.teacher[0].tokenizer(self.prompts(names)).to(self.ctx.device), bin)

    def encode(self, tokens: Tensor, bin: int = 0) -> Tensor:
        """Unit (N, D) text embeddings of tokenised `prompts`, with the context of `bin`."""
        model = self.teacher[0].model
        cast = model.transformer.get_cast_dtype()
        with torch.no_grad():
            embedded = model.token_embedding(tokens).to(cast)
        ctx = self.ctx[bin].to(cast)[None].expand(tokens.shape[0], -1, -1)
        x = torch.cat([embedded[:, :1], ctx, embedded[:, 1 + self.n_ctx:]], dim=1)  # start, context, name...
        x = x + model.positional_embedding.to(cast)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is not None:
            x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
        return F.normalize(x.float(), dim=-1)

    def class_embeddings(self, vocabulary: Vocabulary, bin: int = 0) -> Tensor:
        """Unit (C, D) embeddings of a vocabulary with one bin's context, each class averaging its synonyms."""
        names = [name for synonyms in vocabulary.synonyms for name in synonyms]
        return average_embeddings(self(names, bin), [len(s) for s in vocabulary.synonyms])

    def bin_embeddings(self, vocabulary: Vocabulary) -> Tensor:
        """(bins, C, D): `class_embeddings` with each bin's context."""
        return torch.stack([self.class_embeddings(vocabulary, b) for b in range(self.bins)])


def assign_proposals(boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Each proposal's best IoU with the ground truth and that box's label (-1 and IoU 0 without ground truth)."""
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return torch.full((len(boxes),), -1, dtype=torch.long), torch.zeros(len(boxes))
    iou, best = box_iou(boxes.float(), gt_boxes.float()).max(dim=1)
    return gt_labels.long()[best], iou


def bin_masks(ious: Tensor, bins: Sequence[tuple[float, float]] = IOU_BINS,
              background: tuple[float, float] = BACKGROUND_IOU) -> tuple[list[Tensor], Tensor]:
    """Bool masks: foreground proposals of each IoU bin [low, high), and background ones [low, high)."""
    fg = [(ious >= lo) & (ious < hi) for lo, hi in bins]
    return fg, (ious >= background[0]) & (ious < background[1])


def class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """(K + 1,) DetPro's weights for one training set (labels in [0, K), -1 for background): a class weighs
    N / (K n_c), the background N / (2 n_bg), N counting every sample; classes absent weigh 0."""
    n = len(labels)
    counts = torch.bincount(labels[labels >= 0], minlength=num_classes).float()
    w = torch.where(counts > 0, n / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    n_bg = int((labels < 0).sum())
    return torch.cat([w, torch.tensor([n / (2 * n_bg) if n_bg else 0.0])])


def sample_weights(labels: Tensor, weights: Tensor) -> Tensor:
    """(N,) each sample's weight from the (K + 1,) `class_weights` (background last)."""
    k = len(weights) - 1
    return weights[torch.where(labels >= 0, labels, torch.full_like(labels, k))]


def detpro_loss(region_embeddings: Tensor, labels: Tensor, text_embeddings: Tensor, weights: Tensor,
                temperature: float = 0.01) -> Tensor:
    """DetPro's prompt loss on unit region embeddings (N, D) against unit base-class text embeddings (K, D):
    labels in [0, K) are foreground (cross-entropy), -1 background (cross-entropy to the uniform
    distribution over the K classes); each sample weighted by `weights` (N,) (`sample_weights`; 0 leaves a
    sample out), the weighted sum divided by the sum of the weights, as the reference's 'soft' mode."""
    logits = region_embeddings @ text_embeddings.T / temperature
    log_p = F.log_softmax(logits, dim=-1)
    fg = labels >= 0
    per_sample = torch.where(fg, -log_p.gather(1, labels.clamp_min(0)[:, None])[:, 0], -log_p.mean(dim=-1))
    return (weights * per_sample).sum() / weights.sum().clamp_min(1e-12)


def bin_losses(region_embeddings: Tensor, labels: Tensor, weights: Tensor, per_bin: Sequence[Tensor],
               temperature: float = 0.01) -> list[Tensor]:
    """`detpro_loss` of each IoU bin: the unit regions (N, D) against that bin's unit (K, D) class embeddings,
    with that bin's column of `weights` (N, bins)."""
    if len(per_bin) != weights.shape[1]:
        raise ValueError(f"{len(per_bin)} sets of class embeddings for {weights.shape[1]} IoU bins")
    return [detpro_loss(region_embeddings, labels, text, weights[:, b], temperature) for b, text in enumerate(per_bin)]


def ensemble_bins(per_bin: Tensor) -> Tensor:
    """DetPro's ensemble of its IoU bins' unit class embeddings (bins, C, D): averaged and renormalised."""
    return F.normalize(per_bin.mean(0), dim=-1)


def prompt_fit(region_embeddings: Tensor, labels: Tensor, weights: Tensor, per_bin: Sequence[Tensor],
               temperature: float = 0.01) -> tuple[float, float]:
    """How well class embeddings fit DetPro's training proposals (`ovd`'s ProposalEmbeddings: embeddings (N, D),
    labels, weights (N, bins)): `detpro_loss` summed over the bins, each bin's (K, D) embeddings in `per_bin`
    against its own weights, and the top-1 accuracy of the bins' ensemble (as `LearnedPrompts` averages them)
    on the foreground proposals."""
    regions = F.normalize(region_embeddings.float(), dim=-1)
    per_bin = torch.stack([F.normalize(text.float(), dim=-1) for text in per_bin])
    loss = sum(float(x) for x in bin_losses(regions, labels, weights, per_bin, temperature))
    ensemble, fg = ensemble_bins(per_bin), labels >= 0
    return loss, float(((regions[fg] @ ensemble.T).argmax(1) == labels[fg]).float().mean())


def save_prompts(context: PromptContext, path: "str | Path", meta: Optional[dict] = None) -> None:
    """Write the learned context (safetensors) with what is needed to use it: the teacher's fingerprint,
    n_ctx, bins and `meta` (e.g. the IoU bins)."""
    info = {"teacher": context.teacher[0].fingerprint, "spec": context.teacher[0].spec, "n_ctx": context.n_ctx,
            "bins": context.bins, **(meta or {})}
    tensors = {"ctx": context.ctx.detach().float().cpu().contiguous()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata={"detpro": json.dumps(info)}))


class LearnedPrompts:
    """A text source (`ovclip.classifier`) from a saved context: per class, each bin's embedding (synonyms
    averaged), normalised, averaged over the bins and renormalised (DetPro's ensemble of its IoU bins)."""

    def __init__(self, file: "str | Path"):
        self.file = Path(file)
        if not self.file.is_file():
            raise FileNotFoundError(f"learned prompt file not found: {self.file} (train one with a configs/detpro/ "
                                    f"config and tools/train.py)")
        try:
            with safe_open(str(self.file), "pt") as f:
                self.ctx = f.get_tensor("ctx")
                self.info = json.loads((f.metadata() or {})["detpro"])
        except Exception as e:
            raise ValueError(f"{self.file} is not a learned prompt file ({e})") from e

    def __repr__(self) -> str:
        return f"LearnedPrompts({str(self.file)!r})"

    def context(self, teacher: Teacher) -> PromptContext:
        """The saved context on `teacher`; another teacher than the one it was learned on is an error."""
        if self.info.get("teacher") != teacher.fingerprint:
            raise ValueError(f"{self.file} was learned on teacher {self.info.get('spec')!r} "
                             f"({self.info.get('teacher')}), not on {teacher.spec!r}: the context only means "
                             f"something to the text tower it was learned with")
        context = PromptContext(teacher, self.ctx.shape[1], self.ctx.shape[0])
        with torch.no_grad():
            context.ctx.copy_(self.ctx)
        return context.to(teacher.device)

    @torch.no_grad()
    def __call__(self, teacher: Teacher, vocabulary: Vocabulary) -> Tensor:
        return ensemble_bins(self.context(teacher).bin_embeddings(vocabulary)).cpu()
