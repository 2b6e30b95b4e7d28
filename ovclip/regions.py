"""Region embeddings (ViLD): crops of boxes at several scales, encoded in batches by the teacher."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from .io import as_image_tensor, to_unit_float
from .teacher import INTERPOLATIONS, Teacher

log = logging.getLogger(__name__)

# How a window becomes the teacher's square input: "resize" stretches the whole window to it, ignoring aspect
# (ViLD); "centre" is CLIP's own preprocess, the shorter side to the input size (bicubic) and the centre square
# cut out (OV-DETR's class bank, scripts/save_clip_features.py: `preprocess(image.crop(bbox))`).
CROPS = ("resize", "centre")


@dataclass
class RegionEmbeddings:
    """Per-box teacher embeddings; rows of boxes that could not be cropped are zero and not `valid`."""

    boxes: torch.Tensor  # (N, 4) xyxy, clipped to the image
    embeddings: torch.Tensor  # (N, D) float32, unit length where valid
    valid: torch.Tensor  # (N,) bool


def clip_boxes(boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip xyxy boxes to the image; also return which boxes keep a positive area (and are finite)."""
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    finite = torch.isfinite(boxes).all(dim=1)
    b = torch.nan_to_num(boxes, nan=0.0, posinf=0.0, neginf=0.0)
    b = torch.stack([b[:, 0].clamp(0, width), b[:, 1].clamp(0, height),
                     b[:, 2].clamp(0, width), b[:, 3].clamp(0, height)], dim=1)
    valid = finite & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b, valid


def crop_windows(boxes: torch.Tensor, scale: float, width: int, height: int) -> torch.Tensor:
    """Integer pixel windows (x0, y0, x1, y1) of boxes enlarged `scale` times about their centre, inside the image."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    hw, hh = (boxes[:, 2] - boxes[:, 0]) * scale / 2, (boxes[:, 3] - boxes[:, 1]) * scale / 2
    x0 = torch.floor(cx - hw).clamp(0, width - 1)
    y0 = torch.floor(cy - hh).clamp(0, height - 1)
    x1 = torch.maximum(torch.ceil(cx + hw).clamp(max=width), x0 + 1)
    y1 = torch.maximum(torch.ceil(cy + hh).clamp(max=height), y0 + 1)
    return torch.stack([x0, y0, x1, y1], dim=1).long()


def check_crop(crop: str, interpolation: Optional[str] = None) -> None:
    """A ValueError naming the choices unless `crop` is one of CROPS and `interpolation` None or a kernel."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")


def crop_interpolation(crop: str, interpolation: Optional[str] = None) -> str:
    """The kernel a crop is resized with: `interpolation` if given, else ViLD's bilinear for "resize" and
    CLIP's bicubic for "centre"."""
    return interpolation or ("bilinear" if crop == "resize" else "bicubic")


def resize_crop(image: torch.Tensor, window: Sequence[int], size: int, crop: str = "resize",
                interpolation: Optional[str] = None) -> torch.Tensor:
    """Cut one window out of a float (3, H, W) image in [0, 1] and make it (3, size, size) as `crop` says (see
    CROPS): resized whole, ignoring aspect (as ViLD), or as CLIP's preprocess (shorter side, centre square).
    `interpolation` ("bilinear" or "bicubic", antialiased) is by default bilinear for "resize" (ViLD's crops)
    and bicubic for "centre" (CLIP's)."""
    interpolation = crop_interpolation(crop, interpolation)
    x0, y0, x1, y1 = (int(v) for v in window)
    window_pixels = image[:, y0:y1, x0:x1]
    if crop == "resize":
        out = F.interpolate(window_pixels.unsqueeze(0), size=(size, size), mode=interpolation,
                            align_corners=False, antialias=True)[0]
    else:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        # Resize(size) with one number scales the shorter side to it (the longer to int(size * long / short)),
        # as CLIP's; a window whose shorter side is `size` already comes back as is, a view of `image`
        out = TF.center_crop(TF.resize(window_pixels, [size], interpolation=InterpolationMode(interpolation),
                                       antialias=True), [size, size])
    # bicubic overshoots [0, 1], where PIL's 8-bit result is clamped; not in place: `out` may be `image`'s pixels
    return out.clamp(0, 1) if interpolation == "bicubic" else out


@torch.inference_mode()
def region_embeddings(teacher: Teacher, image: Any, boxes: "torch.Tensor | Sequence",
                      scales: Sequence[float] = (1.0, 1.5), batch_size: int = 64, crop: str = "resize",
                      interpolation: Optional[str] = None) -> RegionEmbeddings:
    """Embed every box of one image: crop at each scale, make each crop the teacher's input (`crop`: resized
    whole, ViLD's, or "centre", CLIP's preprocess; see CROPS; `interpolation`: see `resize_crop`), encode in
    batches, normalise per scale, sum over scales and normalise again.

    Boxes partly outside the image are clipped; empty, inverted, non-finite or fully outside boxes are
    reported (a warning, `valid=False`, a zero row) and never stop the others.
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {list(scales)}")
    check_crop(crop, interpolation)
    img = to_unit_float(as_image_tensor(image)).to(teacher.device)
    height, width = img.shape[-2:]
    clipped, valid = clip_boxes(torch.as_tensor(boxes), width, height)
    n = clipped.shape[0]
    out = torch.zeros(n, teacher.embed_dim)
    if not valid.all():
        log.warning("%d of %d boxes are empty, non-finite or outside the %dx%d image; their embeddings are zero",
                    int((~valid).sum()), n, width, height)
    idx = valid.nonzero().flatten()
    jobs = [(int(i), w) for s in scales for i, w in zip(idx, crop_windows(clipped[idx], s, width, height))]
    size = teacher.image_size
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        crops = torch.stack([resize_crop(img, w, size, crop, interpolation) for _, w in chunk])
        emb = F.normalize(teacher.encode_images(teacher.normalize_pixels(crops)), dim=-1).cpu()
        out.index_add_(0, torch.tensor([i for i, _ in chunk], dtype=torch.long), emb)
    return RegionEmbeddings(clipped, F.normalize(out, dim=-1), valid)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool masks -> (N, 4) xyxy boxes around them (zeros for empty masks)."""
    n = masks.shape[0]
    boxes = torch.zeros(n, 4)
    for i in range(n):
        ys, xs = torch.where(masks[i])
        if len(xs):
            boxes[i] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return boxes


@torch.no_grad()  # not inference_mode: the results serve as training targets, which autograd must be able to save
def mask_embeddings(teacher: Teacher, image: Any, masks: torch.Tensor, scale: float = 1.0,
                    batch_size: int = 64) -> RegionEmbeddings:
    """Embed the masked regions of one image (ZSSeg / OVSeg): the box around each mask is cropped
    (enlarged `scale` times) with the pixels outside the mask set to the teacher's mean colour, which
    is zero after its normalisation. Empty masks get a zero row and `valid=False`."""
    img = to_unit_float(as_image_tensor(image)).to(teacher.device)
    masks = torch.as_tensor(masks).bool().to(img.device)
    if masks.ndim != 3 or masks.shape[-2:] != img.shape[-2:]:
        raise ValueError(f"masks must be (N, {img.shape[-2]}, {img.shape[-1]}), got {tuple(masks.shape)}")
    height, width = img.shape[-2:]
    boxes = mask_boxes(masks.cpu())
    valid = masks.flatten(1).any(dim=1).cpu()
    out = torch.zeros(len(masks), teacher.embed_dim)
    mean = torch.tensor(teacher.mean, dtype=img.dtype, device=img.device).view(3, 1, 1)
    idx = valid.nonzero().flatten().tolist()
    size = teacher.image_size
    for start in range(0, len(idx), batch_size):
        chunk = idx[start:start + batch_size]
        windows = crop_windows(boxes[chunk], scale, width, height)
        crops = torch.stack([resize_crop(torch.where(masks[i], img, mean), w, size) for i, w in zip(chunk, windows)])
        out[chunk] = F.normalize(teacher.encode_images(teacher.normalize_pixels(crops)), dim=-1).cpu()
    return RegionEmbeddings(boxes, out, valid)
