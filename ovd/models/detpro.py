"""DetPro's prompt training as an mmengine model: `python tools/train.py configs/detpro/...` learns the
context vectors (`ovclip.learned_prompts`) from a `ProposalEmbeddings` dataset and writes them, at every
checkpoint and at the end, to `<work_dir>/prompts.safetensors`, the file a ViLD config names as its text
source (`templates=dict(type="learned", file=...)`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import Tensor

from ovclip.learned_prompts import IOU_BINS, PromptContext, bin_losses, save_prompts
from ovclip.teacher import load_teacher
from ovclip.vocabulary import Vocabulary, load_vocabulary

from ..registry import HOOKS, MODELS

PROMPT_FILE = "prompts.safetensors"


@MODELS.register_module()
class DetProPrompts(BaseModel):
    """The learnable context of DetPro: one set of `n_ctx` vectors per IoU bin (context grading), trained
    with `detpro_loss` over the vocabulary's base classes (temperature 0.01, as the reference). The bins'
    losses are summed: their contexts share no parameter, so this trains each as its own run would."""

    def __init__(self, teacher: "str | dict", vocabulary: "str | Sequence[str] | Vocabulary", n_ctx: int = 8,
                 iou_bins: Sequence[Sequence[float]] = IOU_BINS, temperature: float = 0.01, init_std: float = 0.02,
                 teacher_precision: str = "fp32", data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.teacher = load_teacher(teacher, precision=teacher_precision)
        self.vocabulary = load_vocabulary(vocabulary)
        if self.vocabulary.split is None or not self.vocabulary.base:
            raise ValueError(f"DetPro learns its prompts on base classes: vocabulary '{self.vocabulary.name}' "
                             f"has no base / novel split")
        self.base_vocabulary = self.vocabulary.subset(self.vocabulary.base)
        self.iou_bins = [list(map(float, b)) for b in iou_bins]
        self.temperature = temperature
        self.context = PromptContext(self.teacher, n_ctx, len(self.iou_bins), init_std)

    def forward(self, inputs: Sequence[Tensor], data_samples: Optional[Sequence[dict]] = None,
                mode: str = "loss") -> Any:
        """mode 'loss' -> {'loss_bin<i>': ...} for a batch of region embeddings with their labels and
        per-bin weights; 'tensor' -> (bins, K, D) base-class embeddings of each bin's context."""
        if mode == "tensor":
            return self.context.bin_embeddings(self.base_vocabulary)
        if mode != "loss":
            raise ValueError(f"DetPro's prompt model only trains: mode must be 'loss' or 'tensor', not '{mode}'")
        if data_samples is None:
            raise ValueError("mode='loss' needs data_samples with 'label' and 'weights'")
        self.teacher.to(self.context.ctx.device)
        regions = F.normalize(torch.stack(list(inputs)).float(), dim=-1)
        if isinstance(data_samples, dict):  # mmengine's default collate: one list per key
            labels, weights = data_samples["label"], data_samples["weights"]
        else:
            labels, weights = [ds["label"] for ds in data_samples], [ds["weights"] for ds in data_samples]
        labels = torch.as_tensor([int(x) for x in labels], device=regions.device)
        weights = torch.stack([torch.as_tensor(w) for w in weights]).to(regions.device)
        if weights.shape[1] != self.context.bins:
            raise ValueError(f"the data weighs each proposal for {weights.shape[1]} IoU bins, the model learns "
                             f"{self.context.bins} contexts: give model.iou_bins and the dataset's iou_bins the "
                             f"same bins")
        losses = bin_losses(regions, labels, weights, self.context.bin_embeddings(self.base_vocabulary),
                            self.temperature)
        return {f"loss_bin{b}": loss for b, loss in enumerate(losses)}

    def save_prompts(self, path: "str | Path") -> None:
        """Write the learned context where a text source can read it."""
        save_prompts(self.context, path, {"iou_bins": self.iou_bins, "vocabulary": self.vocabulary.name,
                                          "temperature": self.temperature})


@HOOKS.register_module()
class SavePromptsHook(Hook):
    """Writes `<work_dir>/prompts.safetensors` after every checkpoint and at the end of training, so the
    prompts of the last finished checkpoint are always usable."""

    priority = "VERY_LOW"

    def _save(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        if isinstance(model, DetProPrompts) and runner.rank == 0:
            model.save_prompts(Path(runner.work_dir) / PROMPT_FILE)

    def after_save_checkpoint(self, runner, checkpoint: dict) -> None:  # noqa: D102 - mmengine's hook
        self._save(runner)

    def after_train(self, runner) -> None:  # noqa: D102 - mmengine's hook
        self._save(runner)
