"""Dense per-pixel teacher embeddings (MaskCLIP) and their classification against text embeddings.

ViT: the last block's query-key attention is skipped, so every token attends only to itself: its value
is projected by the attention output layer and continues through the residual, MLP, final norm and
projection. ModifiedResNet: the attention pool's value and output projections become 1x1 convolutions
over the last feature map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from .io import as_image_tensor, to_unit_float
from .resize import resize_bilinear, traced_short_side_size, tracing
from .teacher import Teacher, TeacherError, vision_kind


# The cosine similarity MaskCLIP gives a class removed by prompt denoising: far below any real one.
ABSENT_COSINE = -100.0


@dataclass
class DenseEmbeddings:
    """A (D, h, w) map of unit-length embeddings covering the whole image, plus the last layer's keys."""

    embeddings: torch.Tensor  # (D, h, w)
    keys: torch.Tensor  # (C, h, w), the last layer's keys (ViT: through the attention output projection)
    image_size: tuple[int, int]  # (H, W) of the original image the map covers

    def upsample(self, size: "tuple[int, int] | None" = None) -> torch.Tensor:
        """The embedding map bilinearly resized to `size` (default: the image size), renormalised."""
        up = F.interpolate(self.embeddings[None], size=size or self.image_size, mode="bilinear",
                           align_corners=False)[0]
        return F.normalize(up, dim=0)


def _stride(teacher: Teacher) -> int:
    if vision_kind(teacher) == "vit":
        return int(teacher.visual.patch_size[0])
    return 32


def _interpolate_positions(pos: torch.Tensor, grid: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Resize the learned patch position grid (keeping the class position) for another input size."""
    if not tracing() and tuple(grid) == tuple(new):  # traced: resized always (to the same size, a no-op)
        return pos
    cls, patches = pos[:1], pos[1:]
    patches = patches.reshape(1, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=new, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)])


def _vit_dense(visual: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if getattr(visual, "attn_pool", None) is not None:
        raise TeacherError("dense embeddings are not defined for ViTs with an attentional pooler")
    blocks = visual.transformer.resblocks
    last = blocks[-1]
    if not isinstance(last, ResidualAttentionBlock) or hasattr(last, "ln_1_kv"):
        raise TeacherError(f"dense embeddings need open_clip's standard ViT blocks, not {type(last).__name__}")
    b, _, h, w = x.shape
    gh, gw = h // visual.patch_size[0], w // visual.patch_size[1]
    t = visual.conv1(x).flatten(2).transpose(1, 2)
    t = torch.cat([visual.class_embedding.view(1, 1, -1).expand(b, 1, -1).to(t.dtype), t], dim=1)
    t = t + _interpolate_positions(visual.positional_embedding, visual.grid_size, (gh, gw)).to(t.dtype)
    t = visual.ln_pre(t)
    batch_first = getattr(visual.transformer, "batch_first", True)
    if not batch_first:
        t = t.transpose(0, 1)
    for blk in blocks[:-1]:
        t = blk(t)
    if not batch_first:
        t = t.transpose(0, 1)
    y = last.ln_1(t)
    _, k, v = F.linear(y, last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, dim=-1)
    # MaskCLIP's modified last block passes q, k and v alike through the attention's output projection;
    # its key smoothing uses the projected keys.
    k = last.attn.out_proj(k)
    t = t + last.ls_1(last.attn.out_proj(v))
    t = t + last.ls_2(last.mlp(last.ln_2(t)))
    t = visual.ln_post(t)
    if visual.proj is not None:
        t = t @ visual.proj
    emb = t[:, 1:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2)
    keys = k[:, 1:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2)
    return emb, keys


def _resnet_dense(visual: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = visual.stem(x)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    pool = visual.attnpool

    def conv1x1(lin: torch.nn.Linear, feat: torch.Tensor) -> torch.Tensor:
        return F.conv2d(feat, lin.weight[:, :, None, None], lin.bias)
    return conv1x1(pool.c_proj, conv1x1(pool.v_proj, x)), conv1x1(pool.k_proj, x)


def dense_input_size(teacher: Teacher, height: int, width: int, short_side: "int | None" = None) -> tuple[int, int]:
    """Input size for a dense pass: short side scaled to `short_side` (default the teacher's input size),
    both sides rounded to a multiple of the tower's stride."""
    return traced_short_side_size(height, width, teacher.image_size if short_side is None else short_side,
                                  _stride(teacher))


@torch.inference_mode()
def dense_embeddings(teacher: Teacher, image: Any, short_side: "int | None" = None) -> DenseEmbeddings:
    """MaskCLIP per-pixel embeddings of one image: a (D, h, w) unit-length map aligned to the whole image."""
    kind = vision_kind(teacher)
    img = to_unit_float(as_image_tensor(image))
    height, width = img.shape[-2:]
    size = dense_input_size(teacher, height, width, short_side)
    x = resize_bilinear(img[None], size, antialias=True)
    x = teacher.normalize_pixels(x).to(teacher.device, teacher.dtype)
    emb, keys = (_vit_dense if kind == "vit" else _resnet_dense)(teacher.visual, x)
    return DenseEmbeddings(F.normalize(emb[0].float(), dim=0).cpu(), keys[0].float().cpu(), (height, width))


def classify_dense(dense: DenseEmbeddings, text_embeddings: torch.Tensor, logit_scale: float = 100.0,
                   key_smoothing: "float | None" = None, prompt_denoising: "float | None" = None) -> torch.Tensor:
    """MaskCLIP's per-pixel class scores (K, h, w) of a dense map against unit (K, D) text embeddings; their
    argmax is the prediction. As MaskCLIP's head refines its output (chongzhou96/MaskCLIP, MaskClipHead.
    refine_output), prompt denoising first, then key smoothing:

    - the scores start as logits, `logit_scale` x cosine similarity;
    - prompt_denoising=t: classes whose probability (softmax of the logits over classes) stays below t at
      every pixel are taken to be absent: their cosine similarity becomes -100 (`denoise_prompts`);
    - key_smoothing=t: the scores become the class probabilities, and at the pixels whose top probability
      is below t they are replaced by the sum over all pixels j of k_i . k_j x probabilities_j, with the
      last layer's keys normalised per channel over the pixels (MaskCLIP applies F.normalize's default
      dim=1 to its (N, HW, C) keys). The weights are not normalised: smoothed scores are not probabilities.
    """
    d, h, w = dense.embeddings.shape
    if text_embeddings.ndim != 2 or text_embeddings.shape[1] != d:
        raise ValueError(f"text embeddings must be (K, {d}), got {tuple(text_embeddings.shape)}")
    logits = logit_scale * (F.normalize(text_embeddings.float(), dim=-1) @ dense.embeddings.reshape(d, -1))
    logits = logits.reshape(-1, h, w)
    if prompt_denoising is not None:
        logits = denoise_prompts(logits, prompt_denoising, logit_scale)
    if key_smoothing is None:
        return logits
    probs = logits.flatten(1).softmax(dim=0)  # (K, hw)
    keys = F.normalize(dense.keys.reshape(dense.keys.shape[0], -1).float(), dim=1)  # (C, hw): unit over pixels
    smoothed = probs @ (keys.T @ keys)  # the similarity is symmetric: column i sums over pixels j
    low = probs.amax(dim=0) < key_smoothing
    return torch.where(low[None], smoothed, probs).reshape(-1, h, w)


def denoise_prompts(logits: torch.Tensor, threshold: float, logit_scale: float = 1.0) -> torch.Tensor:
    """MaskCLIP's prompt denoising on (K, h, w) logits (`logit_scale` x cosine similarity): classes whose
    softmax confidence stays below `threshold` at every pixel are taken to be absent and get the logit of a
    cosine similarity of ABSENT_COSINE (-100, as MaskCLIP sets them): finite, so that bilinear resizing and
    averaging over windows treat them as the reference does. Never every class: the most confident stays."""
    confidence = logits.softmax(dim=0).flatten(1).amax(dim=1)
    absent = confidence < threshold
    # never remove every class: keep the most confident one (tensor operations only, so that it exports)
    top = torch.arange(confidence.shape[0], device=logits.device) == confidence.argmax()
    absent = absent & ~(absent.all() & top)
    return torch.where(absent[:, None, None], torch.full_like(logits, ABSENT_COSINE * logit_scale), logits)
