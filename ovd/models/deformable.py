"""Deformable DETR's transformer in plain PyTorch (no compiled ops): multi-scale deformable attention, its
encoder and decoder, iterative box refinement and two-stage proposals, sine position encodings.

They follow fundamentalvision/Deformable-DETR as yuhangzang/OV-DETR vendors it (models/ops/functions/
ms_deform_attn_func.py `ms_deform_attn_core_pytorch`, models/deformable_transformer.py): the attention
samples each level with `grid_sample` as the reference's pure PyTorch path does; the decoder's
self-attention takes a mask (OV-DETR's block-diagonal one, so that queries conditioned on different classes
do not see each other).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
        """query (B, Q, C), reference points (B, Q, levels, 2) in [0, 1] (x, y) or (B, Q, levels, 4) boxes
        (cx, cy, w, h), value (B, S, C) the levels' maps flattened in order, `shapes` their (H, W), padding
        mask (B, S) True on padding -> (B, Q, C)."""
        b, q, c = query.shape
        v = self.value_proj(value)
        if padding_mask is not None:
            v = v.masked_fill(padding_mask[..., None], 0.0)
        v = v.view(b, -1, self.heads, c // self.heads)
        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(b, q, self.heads, self.levels * self.points).softmax(-1)
        if reference_points.shape[-1] == 2:  # points: offsets in pixels of each level
            normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
            locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        else:  # boxes (cx, cy, w, h): offsets in halves of the box, spread over the points
            ref = reference_points[:, :, None, :, None]
            locations = ref[..., :2] + offsets / self.points * ref[..., 2:] * 0.5
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




def proposal_position_encoding(boxes: Tensor, channels: int, temperature: float = 10000.0) -> Tensor:
    """Deformable DETR's `get_proposal_pos_embed`: (B, Q, 4) unnormalised boxes (logits) -> (B, Q, 4 x
    channels) sine encodings of their sigmoid."""
    dim_t = torch.arange(channels, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / channels)
    pos = boxes.sigmoid()[:, :, :, None] * (2 * math.pi) / dim_t
    return torch.stack((pos[:, :, :, 0::2].sin(), pos[:, :, :, 1::2].cos()), dim=4).flatten(2)


def encoder_proposals(memory: Tensor, padding: Tensor, shapes: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """Deformable DETR's `gen_encoder_output_proposals`: a box per encoder pixel (its centre, side 0.05 x
    2^level) as logits, +inf where padded or too near the border, and the memory zeroed there."""
    b = memory.shape[0]
    proposals, start = [], 0
    for lvl, (h, w) in enumerate(shapes):
        mask = padding[:, start:start + h * w].view(b, h, w)
        valid_h, valid_w = (~mask[:, :, 0]).sum(1), (~mask[:, 0, :]).sum(1)
        ys, xs = torch.meshgrid(torch.linspace(0, h - 1, h, device=memory.device),
                                torch.linspace(0, w - 1, w, device=memory.device), indexing="ij")
        grid = torch.cat([xs[..., None], ys[..., None]], -1)
        scale = torch.stack([valid_w, valid_h], -1).view(b, 1, 1, 2)
        grid = (grid[None].expand(b, -1, -1, -1) + 0.5) / scale
        proposals.append(torch.cat((grid, torch.ones_like(grid) * 0.05 * (2.0 ** lvl)), -1).view(b, -1, 4))
        start += h * w
    out = torch.cat(proposals, 1)
    valid = ((out > 0.01) & (out < 0.99)).all(-1, keepdim=True)
    out = torch.log(out / (1 - out)).masked_fill(padding[..., None], float("inf")).masked_fill(~valid, float("inf"))
    return memory.masked_fill(padding[..., None], 0.0).masked_fill(~valid, 0.0), out


class DeformableTransformer(nn.Module):
    """Deformable DETR's encoder and decoder with its two options: `box_refine` (each decoder layer refines
    the boxes of the one before with its own box head; else the reference points are shared by every layer)
    and `two_stage` (the encoder proposes boxes, a class-agnostic score and a box head per pixel, and the
    top `num_queries` of each image seed the decoder's queries and reference boxes; else the queries are
    learned embeddings). `decode` can repeat the queries once per row of a condition (OV-DETR)."""

    def __init__(self, d_model: int, levels: int, encoder_layers: int, decoder_layers: int, ffn_dim: int,
                 heads: int, points: int, dropout: float, num_queries: int, box_refine: bool = True,
                 two_stage: bool = True):
        super().__init__()
        args = (d_model, ffn_dim, dropout, levels, heads, points)
        self.encoder = nn.ModuleList(EncoderLayer(*args) for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(*args) for _ in range(decoder_layers))
        self.level_embed = nn.Parameter(torch.empty(levels, d_model))
        self.num_queries, self.box_refine, self.two_stage = num_queries, box_refine, two_stage
        box_head = MLP(d_model, d_model, 4, 3)
        # one box head per decoder layer (copies when refining, else the same one), one more for the encoder
        heads_needed = decoder_layers + (1 if two_stage else 0)
        self.bbox_embed = nn.ModuleList(copy.deepcopy(box_head) if box_refine else box_head
                                        for _ in range(heads_needed))
        if two_stage:
            self.enc_output, self.enc_output_norm = nn.Linear(d_model, d_model), nn.LayerNorm(d_model)
            self.enc_class = nn.Linear(d_model, 1)
            self.pos_trans, self.pos_trans_norm = nn.Linear(2 * d_model, 2 * d_model), nn.LayerNorm(2 * d_model)
        else:
            self.query_embed = nn.Embedding(num_queries, 2 * d_model)
            self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # as the reference: Xavier for the transformer's matrices (not the box heads nor the two-stage class head,
        # which the reference's model adds: PyTorch's default initialisation for the latter), MSDeformAttn's own
        # initialisation, box heads predicting no change
        for name, p in self.named_parameters():
            if p.dim() > 1 and not name.startswith(("bbox_embed", "enc_class")):
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            nn.init.constant_(self.reference_points.bias, 0.0)
        else:
            nn.init.constant_(self.enc_class.bias, -math.log((1 - 0.01) / 0.01))
        for i, head in enumerate(self.bbox_embed):
            nn.init.constant_(head.layers[-1].weight, 0)
            nn.init.constant_(head.layers[-1].bias, 0)
            if i == 0 and not self.two_stage:  # small initial boxes around the learned reference points
                nn.init.constant_(head.layers[-1].bias[2:], -2.0)

    def encode(self, srcs: Sequence[Tensor], masks: Sequence[Tensor], pos: Sequence[Tensor]) -> dict[str, Any]:
        """Flatten the levels and run the encoder (and, two-stage, score its proposals)."""
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        ratios = torch.stack([valid_ratios(m) for m in masks], 1)
        memory = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat([(p + self.level_embed[i].view(1, -1, 1, 1)).flatten(2).transpose(1, 2)
                              for i, p in enumerate(pos)], 1)
        padding = torch.cat([m.flatten(1) for m in masks], 1)
        reference = encoder_reference_points(shapes, ratios)
        for layer in self.encoder:
            memory = layer(memory, pos_flat, reference, shapes, padding)
        enc = {"memory": memory, "padding": padding, "shapes": shapes, "ratios": ratios}
        if self.two_stage:
            out, proposals = encoder_proposals(memory, padding, shapes)
            out = self.enc_output_norm(self.enc_output(out))
            enc["enc_logits"] = self.enc_class(out)
            enc["enc_boxes_unact"] = self.bbox_embed[-1](out) + proposals
        return enc

    def decode(self, enc: dict[str, Any], condition: Optional[Tensor] = None) -> dict[str, Tensor]:
        """hs (layers, B, Q, d) and each layer's boxes (layers, B, Q, 4; cxcywh in [0, 1]), the queries
        repeated once per row of `condition` (R, d) added to their content, with the block-diagonal
        self-attention mask that keeps the repeats apart."""
        memory, ratios = enc["memory"], enc["ratios"]
        b, d = memory.shape[0], memory.shape[-1]
        if self.two_stage:
            top = enc["enc_logits"][..., 0].topk(min(self.num_queries, memory.shape[1]), dim=1)[1]
            boxes_unact = torch.gather(enc["enc_boxes_unact"], 1, top[..., None].expand(-1, -1, 4)).detach()
            reference = boxes_unact.sigmoid()
            pos, tgt = self.pos_trans_norm(self.pos_trans(proposal_position_encoding(boxes_unact, d // 2))).split(d, 2)
        else:
            pos, tgt = self.query_embed.weight.split(d, dim=1)
            pos, tgt = pos[None].expand(b, -1, -1), tgt[None].expand(b, -1, -1)
            reference = self.reference_points(pos).sigmoid()
        attn_mask = None
        if condition is not None:
            n, r = pos.shape[1], len(condition)
            pos, tgt, reference = pos.repeat(1, r, 1), tgt.repeat(1, r, 1), reference.repeat(1, r, 1)
            tgt = tgt + condition.repeat_interleave(n, 0)[None]
            attn_mask = block_mask(r, n, device=memory.device)
        out, hs, boxes = tgt, [], []
        for i, layer in enumerate(self.decoder):
            scale = ratios if reference.shape[-1] == 2 else torch.cat([ratios, ratios], -1)
            out = layer(out, pos, reference[:, :, None] * scale[:, None], memory, enc["shapes"], enc["padding"],
                        attn_mask)
            delta = self.bbox_embed[i](out)
            if reference.shape[-1] == 4:
                new = (delta + inverse_sigmoid(reference)).sigmoid()
            else:
                new = torch.cat([delta[..., :2] + inverse_sigmoid(reference), delta[..., 2:]], -1).sigmoid()
            hs.append(out)
            boxes.append(new)
            if self.box_refine:
                reference = new.detach()
        return {"hs": torch.stack(hs), "boxes": torch.stack(boxes)}
