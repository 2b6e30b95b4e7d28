"""Deformable DETR's parts in plain PyTorch (no compiled ops): multi-scale deformable attention, its
encoder and decoder, sine position encodings, and DETR's Hungarian matching and set losses.

They follow fundamentalvision/Deformable-DETR as yuhangzang/OV-DETR vendors it (models/ops/functions/
ms_deform_attn_func.py `ms_deform_attn_core_pytorch`, models/deformable_transformer.py, models/matcher.py,
models/set_criterion.py): the attention samples each level with `grid_sample` as the reference's pure
PyTorch path does; the decoder's self-attention takes a mask (OV-DETR's block-diagonal one, so that
queries conditioned on different classes do not see each other); reference points are 2-d and shared by
every decoder layer (no iterative box refinement, no two-stage proposals: the lighter variant).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """log(x / (1 - x)), clamped as the reference clamps it."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def sine_position_encoding(mask: Tensor, channels: int, temperature: float = 10000.0) -> Tensor:
    """DETR's normalised sine encoding (scale 2 pi) of the unpadded pixels of a (B, H, W) padding mask
    (True = padding) -> (B, channels, H, W)."""
    not_mask = (~mask).float()
    y, x = not_mask.cumsum(1), not_mask.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    half = channels // 2
    dim_t = temperature ** (2 * (torch.arange(half, dtype=torch.float32, device=mask.device) // 2) / half)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: each query attends to `points` sampled points per head and level
    around its reference point, at learned offsets, with learned weights (softmax over levels x points)."""

    def __init__(self, d_model: int = 256, levels: int = 4, heads: int = 8, points: int = 4):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by the number of heads ({heads})")
        self.levels, self.heads, self.points = levels, heads, points
        self.sampling_offsets = nn.Linear(d_model, heads * levels * points * 2)
        self.attention_weights = nn.Linear(d_model, heads * levels * points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2).repeat(1, self.levels,
                                                                                               self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.constant_(lin.bias, 0.0)

    def forward(self, query: Tensor, reference_points: Tensor, value: Tensor, shapes: Sequence[tuple[int, int]],
                padding_mask: Optional[Tensor] = None) -> Tensor:
        """query (B, Q, C), reference points (B, Q, levels, 2) in [0, 1] (x, y), value (B, S, C) the levels'
        maps flattened in order, `shapes` their (H, W), padding mask (B, S) True on padding -> (B, Q, C)."""
        b, q, c = query.shape
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(b, -1, self.heads, c // self.heads)
        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(b, q, self.heads, self.levels * self.points).softmax(-1)
        normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        return self.output_proj(_deform_sample(v, shapes, locations, weights.view(b, q, self.heads, self.levels,
                                                                                   self.points)))


def _deform_sample(value: Tensor, shapes: Sequence[tuple[int, int]], locations: Tensor, weights: Tensor) -> Tensor:
    """The reference's `ms_deform_attn_core_pytorch`: bilinear samples of each level (zeros outside),
    weighted and summed -> (B, Q, heads * head_dim)."""
    b, _, heads, dim = value.shape
    _, q, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(b * heads, dim, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B * heads, Q, points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    w = weights.transpose(1, 2).reshape(b * heads, 1, q, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * w).sum(-1).view(b, heads * dim, q)
    return out.transpose(1, 2).contiguous()


class _FFN(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))


class EncoderLayer(nn.Module):
    """Deformable self-attention over every level's pixels, then a feed-forward block (post-norm)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, levels: int, heads: int, points: int):
        super().__init__()
        self.attn = MSDeformAttn(d_model, levels, heads, points)
        self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.ffn = _FFN(d_model, ffn_dim, dropout)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, shapes, padding_mask: Tensor) -> Tensor:
        src = self.norm(src + self.dropout(self.attn(src + pos, reference_points, src, shapes, padding_mask)))
        return self.ffn(src)


class DecoderLayer(nn.Module):
    """Self-attention among the queries (masked), deformable cross-attention to the encoder's memory,
    feed-forward (post-norm)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float, levels: int, heads: int, points: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.dropout1, self.norm1 = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, levels, heads, points)
        self.dropout2, self.norm2 = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.ffn = _FFN(d_model, ffn_dim, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Tensor, shapes,
                padding_mask: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt, attn_mask=attn_mask, need_weights=False)[0]))
        tgt = self.norm2(tgt + self.dropout2(self.cross_attn(tgt + query_pos, reference_points, memory, shapes,
                                                             padding_mask)))
        return self.ffn(tgt)


def valid_ratios(mask: Tensor) -> Tensor:
    """(B, 2) share of a (B, H, W) padding mask's width and height that is image, (x, y)."""
    h, w = mask.shape[1:]
    return torch.stack([(~mask[:, 0, :]).sum(1).float() / w, (~mask[:, :, 0]).sum(1).float() / h], -1)


def encoder_reference_points(shapes: Sequence[tuple[int, int]], ratios: Tensor) -> Tensor:
    """(B, S, levels, 2) every pixel centre of every level, normalised to the image, seen on each level."""
    points = []
    for lvl, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, device=ratios.device),
                                torch.linspace(0.5, w - 0.5, w, device=ratios.device), indexing="ij")
        ys = ys.reshape(-1)[None] / (ratios[:, None, lvl, 1] * h)
        xs = xs.reshape(-1)[None] / (ratios[:, None, lvl, 0] * w)
        points.append(torch.stack((xs, ys), -1))
    return torch.cat(points, 1)[:, :, None] * ratios[:, None]


def block_mask(blocks: int, size: int, device=None) -> Tensor:
    """(blocks x size)^2 additive self-attention mask: 0 within each block of `size` queries, -inf across
    (OV-DETR's decoder mask: queries conditioned on different classes never see each other)."""
    ids = torch.arange(blocks * size, device=device) // size
    mask = torch.full((blocks * size, blocks * size), float("-inf"), device=device)
    return mask.masked_fill(ids[:, None] == ids[None], 0.0)


# --- matching and losses (DETR / Deformable DETR with focal loss) ---

def focal_class_cost(prob: Tensor) -> Tensor:
    """Deformable DETR's classification matching cost from sigmoid probabilities: focal loss of calling
    it positive minus that of calling it negative (alpha 0.25, gamma 2)."""
    neg = (1 - FOCAL_ALPHA) * prob ** FOCAL_GAMMA * -(1 - prob + 1e-8).log()
    pos = FOCAL_ALPHA * (1 - prob) ** FOCAL_GAMMA * -(prob + 1e-8).log()
    return pos - neg


def match(class_cost: Tensor, pred_boxes: Tensor, gt_boxes: Tensor, weights: dict[str, float]) -> tuple[Tensor, Tensor]:
    """Hungarian assignment of (Q,) predictions to (G,) ground-truth boxes (both cxcywh, normalised) under
    weights['class'] x class_cost (Q, G) + weights['bbox'] x L1 + weights['giou'] x -GIoU; returns
    (prediction indices, ground-truth indices), min(Q, G) pairs."""
    if len(gt_boxes) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    with torch.no_grad():
        cost = (weights["class"] * class_cost + weights["bbox"] * torch.cdist(pred_boxes, gt_boxes, p=1)
                - weights["giou"] * generalized_box_iou(box_convert(pred_boxes, "cxcywh", "xyxy"),
                                                        box_convert(gt_boxes, "cxcywh", "xyxy")))
    rows, cols = linear_sum_assignment(cost.float().cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def box_losses(pred: Tensor, gt: Tensor, num_boxes: float) -> tuple[Tensor, Tensor]:
    """DETR's L1 and GIoU losses of matched (N, 4) cxcywh boxes, summed and divided by `num_boxes`."""
    l1 = F.l1_loss(pred, gt, reduction="sum") / num_boxes
    giou = torch.diag(generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")))
    return l1, (1 - giou).sum() / num_boxes


def focal_loss(logits: Tensor, targets: Tensor, num_boxes: float) -> Tensor:
    """Deformable DETR's sigmoid focal classification loss, summed over queries and classes and divided by
    `num_boxes` (the reference's mean over queries times their number)."""
    return sigmoid_focal_loss(logits, targets, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum") / num_boxes
