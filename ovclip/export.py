"""Export to ONNX, the teacher's part: its text encoder as a graph (token ids -> unit embeddings), its
tokenizer as a `tokenizers` JSON file, and the manifest a deployed model folder carries. A student's own
graph is exported by its package (`ovd.export`, `ovseg.export`) with `export_graph`; `ovclip.deploy` runs
the folder with onnxruntime alone.

A deployed folder holds:
  model.onnx         the student: image + (C, D) text embeddings (+ base mask) -> its outputs, C dynamic
  text_encoder.onnx  (N, L) int64 token ids -> (N, D) unit text embeddings
  tokenizer.json     open_clip's CLIP BPE tokenizer for the `tokenizers` library
  resize.onnx        segmenters: torch's bilinear resize, for the runtime's resizing and sliding windows
  labels.onnx        segmenters: the image's scores -> each pixel's label and probability
  manifest.json      kind, inputs, outputs, embedding size, prompts, opset, versions, the vocabulary
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserInputError
from .io import atomic_json_dump
from .learned_prompts import LearnedPrompts, PromptContext
from .prompts import get_templates
from .resize import resize_bilinear
from .teacher import Teacher
from .vocabulary import Vocabulary

OPSET = 17
MANIFEST = "manifest.json"


class ExportError(UserInputError, RuntimeError):
    """A model or teacher cannot be exported, with the reason."""


def export_graph(module: nn.Module, args: tuple, path: "str | Path", input_names: Sequence[str],
                 output_names: Sequence[str], dynamic_axes: dict[str, dict[int, str]]) -> Path:
    """Trace `module` on `args` into an ONNX file (torch's TorchScript exporter, opset `OPSET`: it knows
    torchvision's RoIAlign and NMS)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), traceable_attention():  # warnings: tracer chatter about Python ints
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(input_names), output_names=list(output_names), dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    return path


_MHA_FORWARD = nn.MultiheadAttention.forward


def _attention(self: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               key_padding_mask: Optional[torch.Tensor] = None, need_weights: bool = True,
               attn_mask: Optional[torch.Tensor] = None, average_attn_weights: bool = True, is_causal: bool = False):
    """nn.MultiheadAttention's plain case (one in-projection, no padding mask, bias_k or zero attention),
    written so that a trace keeps the sequence lengths free: torch's own bakes the traced lengths into its
    reshapes (and its fused inference kernel has no ONNX form). Other cases run torch's."""
    if (key_padding_mask is not None or is_causal or query.dim() != 3 or not self._qkv_same_embed_dim
            or self.bias_k is not None or self.add_zero_attn):
        return _MHA_FORWARD(self, query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights,
                            is_causal)
    if not self.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    e, heads = self.embed_dim, self.num_heads
    w, b = self.in_proj_weight, self.in_proj_bias
    q, k, v = (F.linear(t, w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e]).reshape(
        t.shape[0], -1, heads, e // heads).transpose(1, 2) for i, t in enumerate((query, key, value)))
    mask = attn_mask
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros_like(mask, dtype=q.dtype).masked_fill(mask, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = self.out_proj(out.transpose(1, 2).reshape(query.shape[0], -1, e))
    return (out if self.batch_first else out.transpose(0, 1)), None


@contextmanager
def traceable_attention() -> Iterator[None]:
    """Within it, every nn.MultiheadAttention runs `_attention` (tracing for export)."""
    nn.MultiheadAttention.forward = _attention
    try:
        yield
    finally:
        nn.MultiheadAttention.forward = _MHA_FORWARD


class _TextTower(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def clip_tokenizer(teacher: Teacher):
    """The teacher's open_clip BPE tokenizer as a `tokenizers.Tokenizer` giving the same ids: lower-cased,
    whitespace collapsed, split by CLIP's pattern, byte-level BPE with '</w>' word ends, start / end
    tokens, truncated (the end token kept) and zero-padded to the context length. open_clip also runs
    ftfy and HTML unescaping, which plain class names do not need."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    simple = teacher.tokenizer
    if not all(hasattr(simple, a) for a in ("encoder", "bpe_ranks", "pat", "sot_token_id", "eot_token_id")):
        raise ExportError(f"the teacher's tokenizer ({type(simple).__name__}) is not open_clip's CLIP BPE "
                          f"tokenizer; only that one can be exported")
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    tok = Tokenizer(models.BPE(vocab=dict(simple.encoder), merges=merges, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Strip(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(simple.pat.pattern), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    sot, eot = simple.decoder[simple.sot_token_id], simple.decoder[simple.eot_token_id]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, simple.sot_token_id), (eot, simple.eot_token_id)])
    tok.enable_truncation(max_length=simple.context_length)
    tok.enable_padding(pad_id=0, pad_token=simple.decoder[0], length=simple.context_length)
    return tok


class _LearnedTextTower(nn.Module):
    def __init__(self, context: PromptContext):
        super().__init__()
        self.context, self.model = context, context.teacher[0].model  # the model: its weights go in the graph

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.context.encode(tokens, b) for b in range(self.context.bins)])


def export_text_encoder(teacher: Teacher, out_dir: "str | Path", source: Any) -> dict[str, Any]:
    """Write text_encoder.onnx and tokenizer.json to `out_dir`; return their manifest entry. `source`: the
    model's text source (`ovclip.classifier`): hand-written templates (the graph maps (N, L) token ids of
    prompts to (N, D) unit embeddings) or DetPro's learned prompts (to (bins, N, D): one per learned context,
    for prompts 'X X ... X name.' whose placeholders the graph replaces by the context)."""
    from .classifier import PromptTemplates
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer(teacher)
    tok.save(str(out_dir / "tokenizer.json"))
    entry = {"file": "text_encoder.onnx", "tokenizer": "tokenizer.json",
             "context_length": int(teacher.tokenizer.context_length), "embed_dim": int(teacher.embed_dim)}
    if isinstance(source, PromptTemplates):
        tower: nn.Module = _TextTower(teacher.model)
        entry.update(prompts="templates", templates=list(get_templates(source.templates)))
        axes = {"tokens": {0: "prompts"}, "text_embeddings": {0: "prompts"}}
    elif isinstance(source, LearnedPrompts):
        context = source.context(teacher)
        tower = _LearnedTextTower(context)
        entry.update(prompts="learned", prompt_format=context.prompts(["{}"])[0], bins=context.bins)
        axes = {"tokens": {0: "prompts"}, "text_embeddings": {1: "prompts"}}
    else:
        raise ExportError(f"this model's class embeddings come from {source!r}: the exported text encoder runs "
                          f"hand-written prompt templates or DetPro's learned prompts only")
    tokens = torch.tensor([e.ids for e in tok.encode_batch(["a photo of a cat.", "dog"])], dtype=torch.long)
    export_graph(tower.to("cpu").float(), (tokens,), out_dir / "text_encoder.onnx", ["tokens"], ["text_embeddings"],
                 axes)
    return entry


class _Resize(nn.Module):
    def forward(self, image: torch.Tensor, size: torch.Tensor, antialias: torch.Tensor) -> torch.Tensor:
        return resize_bilinear(image, size, antialias)


def export_resize(out_dir: "str | Path") -> str:
    """Write resize.onnx: (C, H, W) float image, (2,) int64 size, bool antialias -> the image resized as
    `ovclip.resize.resize_bilinear` resizes it; returns the file's name."""
    image = torch.rand(2, 9, 11, generator=torch.Generator().manual_seed(0))
    export_graph(_Resize(), (image, torch.tensor([5, 7]), torch.tensor(True)), Path(out_dir) / "resize.onnx",
                 ["image", "size", "antialias"], ["resized"],
                 {"image": {0: "channels", 1: "height", 2: "width"}, "resized": {0: "channels", 1: "out_height",
                                                                                 2: "out_width"}})
    return "resize.onnx"


class _Labels(nn.Module):
    def __init__(self, softmax: bool):
        super().__init__()
        self.softmax = softmax

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.softmax:
            scores, labels = logits.max(dim=0)
            return labels, scores
        # SegmentationModel.probabilities (-inf counts as -1e4) then its max: the top probability is
        # 1 / sum(exp(logits - max)), which onnxruntime computes without a softmax along the first axis (5x faster)
        logits = torch.where(logits == float("-inf"), torch.full_like(logits, -1e4), logits)
        top, labels = logits.max(dim=0)
        return labels, 1 / torch.exp(logits - top[None]).sum(dim=0)


def export_labels(out_dir: "str | Path", softmax: bool) -> str:
    """Write labels.onnx: (C, H, W) scores -> (H, W) int64 labels and their (H, W) probabilities (the softmax
    of the scores first if `softmax`); returns the file's name."""
    logits = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    export_graph(_Labels(softmax), (logits,), Path(out_dir) / "labels.onnx", ["logits"], ["labels", "scores"],
                 {"logits": {0: "classes", 1: "height", 2: "width"}, "labels": {0: "height", 1: "width"},
                  "scores": {0: "height", 1: "width"}})
    return "labels.onnx"


def write_manifest(out_dir: "str | Path", kind: str, model: dict[str, Any], text_encoder: dict[str, Any],
                   vocabulary: Vocabulary) -> Path:
    """Write manifest.json: what `ovclip.deploy` needs to run the folder."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        project = version("ovclip")
    except PackageNotFoundError:  # pragma: no cover - a source tree on sys.path
        project = "unknown"
    manifest = {"format": "ovclip-onnx", "format_version": 1, "kind": kind, "opset": OPSET,
                "ovclip_version": project, "torch_version": torch.__version__, "model": model,
                "text_encoder": text_encoder, "vocabulary": vocabulary.to_dict()}
    path = Path(out_dir) / MANIFEST
    atomic_json_dump(manifest, path, indent=1)
    return path
