"""A synthetic open-vocabulary world: textured images of coloured shapes, seeded and deterministic.

It lets anyone check on a laptop CPU that distillation transfers classes the student never saw
boxes for. Shapes are split into base (8) and novel (4) classes. Detection / segmentation images have
1-4 objects; training files annotate only base objects (novel ones stay in the images, unannotated,
as in OV-COCO). Captioned single-object images of *all* classes ("a photo of a small red star")
stand in for CLIP's web data when training the teacher.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..io import atomic_json_dump, atomic_write

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "diamond", "hexagon", "ring", "crescent",
          "arrow", "pentagon")
NOVEL_SHAPES = ("star", "heart", "hexagon", "crescent")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 230), "yellow": (235, 215, 50),
           "orange": (240, 140, 30), "purple": (150, 60, 200), "white": (245, 245, 245), "pink": (245, 130, 190),
           "cyan": (60, 215, 225), "black": (20, 20, 20)}
SIZE_WORDS = ((0.0, "small"), (0.45, "medium"), (0.7, "large"))
CAPTION_TEMPLATES = ("a photo of a {size} {colour} {shape}.", "a {colour} {shape}.", "a {size} {shape}.",
                     "a photo of a {shape}.", "a {shape} on a textured background.", "the {colour} {shape}.",
                     "a drawing of a {size} {colour} {shape}.", "a {shape}.")
# The caption sets a teacher can be trained on (train_tiny_clip's `captions`). "default": every template above,
# two of them in the phrasing of the hand-written prompt a detector uses ("a photo of a {}.", SINGLE_TEMPLATE),
# which is then in the teacher's training distribution. "no-hand-prompt": those two left out, as CLIP's web
# captions are not written from a detector's prompt: the fair test of learned prompts (DetPro).
CAPTION_SETS: dict[str, tuple[str, ...]] = {
    "default": CAPTION_TEMPLATES,
    "no-hand-prompt": tuple(t for t in CAPTION_TEMPLATES if not t.startswith("a photo of a ")),
}


def vocabulary_entries() -> list[dict]:
    """The world's classes as vocabulary-file entries (name, COCO id = position + 1, base / novel)."""
    return [{"name": s, "id": i + 1, "split": "novel" if s in NOVEL_SHAPES else "base"} for i, s in enumerate(SHAPES)]


def _regular(n: int, r: float, angle: float, inner: float | None = None) -> np.ndarray:
    """Vertices of a regular polygon (or a star when `inner` is the inner radius ratio), unit-centred."""
    pts = []
    steps = 2 * n if inner else n
    for k in range(steps):
        rad = r * (inner if inner and k % 2 else 1.0)
        a = angle + 2 * math.pi * k / steps - math.pi / 2
        pts.append((rad * math.cos(a), rad * math.sin(a)))
    return np.asarray(pts)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def shape_mask(kind: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(size, size) bool mask of one shape of radius r centred at (cx, cy), rotated by angle."""
    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)

    def poly(pts: np.ndarray, fill: int = 255) -> None:
        d.polygon([(float(cx + x), float(cy + y)) for x, y in pts], fill=fill)

    def disc(x: float, y: float, rad: float, fill: int = 255) -> None:
        d.ellipse([x - rad, y - rad, x + rad, y + rad], fill=fill)

    if kind == "circle":
        disc(cx, cy, r)
    elif kind == "ring":
        disc(cx, cy, r)
        disc(cx, cy, r * 0.55, fill=0)
    elif kind == "crescent":
        disc(cx, cy, r)
        off = _rotate(np.array([[r * 0.5, -r * 0.2]]), angle)[0]
        disc(cx + off[0], cy + off[1], r * 0.85, fill=0)
    elif kind == "square":
        poly(_regular(4, r * 1.1, angle % (math.pi / 8) - math.pi / 16 + math.pi / 4))
    elif kind == "diamond":
        poly(_rotate(np.array([[0, -r], [r * 0.6, 0], [0, r], [-r * 0.6, 0]]), angle % 0.5 - 0.25))
    elif kind == "triangle":
        poly(_regular(3, r * 1.1, angle))
    elif kind == "pentagon":
        poly(_regular(5, r, angle))
    elif kind == "hexagon":
        poly(_regular(6, r, angle))
    elif kind == "star":
        poly(_regular(5, r * 1.1, angle, inner=0.45))
    elif kind == "cross":
        a, b = r * 0.33, r
        poly(_rotate(np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a],
                               [-b, a], [-b, -a], [-a, -a]]), angle))
    elif kind == "heart":
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        poly(_rotate(np.stack([x, y + 2], 1) * (r / 16.5), angle % 0.8 - 0.4))
    elif kind == "arrow":
        w, h = r * 0.3, r
        poly(_rotate(np.array([[-h, -w], [h * 0.2, -w], [h * 0.2, -w * 2.4], [h, 0], [h * 0.2, w * 2.4],
                               [h * 0.2, w], [-h, w]]), angle))
    else:
        raise ValueError(f"unknown shape '{kind}'; shapes are {SHAPES}")
    return np.asarray(im) > 127


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float image: a muted base colour, a gradient, stripes and pixel noise."""
    base = rng.uniform(60, 150, 3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    grad = rng.uniform(-30, 30) * xx + rng.uniform(-30, 30) * yy
    freq, phase, theta = rng.uniform(3, 12), rng.uniform(0, 2 * math.pi), rng.uniform(0, math.pi)
    stripes = rng.uniform(5, 20) * np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)) + phase)
    img = base[None, None] + (grad + stripes)[..., None] + rng.normal(0, 8, (size, size, 3))
    return img


def _paint(img: np.ndarray, mask: np.ndarray, colour: Sequence[int], rng: np.random.Generator) -> None:
    shade = np.asarray(colour, float) * rng.uniform(0.85, 1.1) + rng.normal(0, 6, (int(mask.sum()), 3))
    img[mask] = shade


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class WorldObject:
    """One object drawn in an image: its class position, colour name and visible mask."""

    label: int
    colour: str
    mask: np.ndarray

    @property
    def box(self) -> list[float]:
        """Tight xyxy box of the visible mask (pixel edges)."""
        ys, xs = np.nonzero(self.mask)
        return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def scene(rng: np.random.Generator, size: int = 128, max_objects: int = 4, min_visible: int = 60
          ) -> tuple[np.ndarray, list[WorldObject]]:
    """One detection image: a textured background and 1-`max_objects` shapes that overlap little."""
    img = textured_background(rng, size)
    objects: list[WorldObject] = []
    occupied = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(0.08, 0.2) * size
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            label = int(rng.integers(len(SHAPES)))
            mask = shape_mask(SHAPES[label], size, cx, cy, r, rng.uniform(0, 2 * math.pi))
            if mask.sum() >= min_visible and (mask & occupied).sum() < 0.15 * mask.sum():
                break
        else:
            continue
        colour = str(rng.choice(list(COLOURS)))
        _paint(img, mask, COLOURS[colour], rng)
        for o in objects:  # a later object hides what it covers
            o.mask &= ~mask
        occupied |= mask
        objects.append(WorldObject(label, colour, mask))
    return _to_uint8(img), [o for o in objects if o.mask.sum() >= min_visible // 2]


def caption_sample(rng: np.random.Generator, size: int = 64, label: int | None = None, canvas: int = 128,
                   templates: Sequence[str] = CAPTION_TEMPLATES) -> tuple[np.ndarray, str, int]:
    """A captioned single-object image of any class, made the way ViLD crops regions: one shape of the
    detection images' sizes on a `canvas`-pixel textured image, cut out around its box enlarged 1-1.7
    times (jittered) and resized to size x size, aspect ignored. The caption names the shape and
    maybe its colour and size ("a photo of a small red star"), written from one of `templates`."""
    label = int(rng.integers(len(SHAPES))) if label is None else label
    img = textured_background(rng, canvas)
    rel = rng.uniform(0.08, 0.2)
    r = rel * canvas
    cx, cy = rng.uniform(r, canvas - r), rng.uniform(r, canvas - r)
    mask = shape_mask(SHAPES[label], canvas, cx, cy, r, rng.uniform(0, 2 * math.pi))
    colour = str(rng.choice(list(COLOURS)))
    _paint(img, mask, COLOURS[colour], rng)
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    scale = rng.uniform(1.0, 1.7)
    w, h = (x1 - x0) * scale, (y1 - y0) * scale
    mx, my = (x0 + x1) / 2 + rng.uniform(-0.1, 0.1) * w, (y0 + y1) / 2 + rng.uniform(-0.1, 0.1) * h
    box = (max(0, int(mx - w / 2)), max(0, int(my - h / 2)), min(canvas, int(math.ceil(mx + w / 2))),
           min(canvas, int(math.ceil(my + h / 2))))
    crop = Image.fromarray(_to_uint8(img)).crop(box).resize((size, size), Image.BILINEAR)
    size_word = [word for t, word in SIZE_WORDS if (rel - 0.08) / 0.12 >= t][-1]
    template = templates[int(rng.integers(len(templates)))]
    return np.asarray(crop), template.format(size=size_word, colour=colour, shape=SHAPES[label]), label


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _save_png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def make_world(out_dir: "str | Path", seed: int = 0, n_train: int = 400, n_val: int = 100, size: int = 128
               ) -> dict[str, str]:
    """Write the world under out_dir: {train,val}/images, {train,val}/labels (semantic PNGs: 0 is
    background, k + 1 is class k), train_base.json (base objects only), train_all.json (every object,
    for the oracle), val.json (every object), vocabulary.json. Returns the paths by name. A world written
    there before with the same parameters is kept as it is (the same seed draws the same world)."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    categories = [{"id": e["id"], "name": e["name"]} for e in vocabulary_entries()]
    novel = {SHAPES.index(s) for s in NOVEL_SHAPES}
    paths = {"root": str(out), "vocabulary": str(out / "vocabulary.json")}
    for split in ("train", "val"):
        paths.update({f"{split}_images": str(out / split / "images"), f"{split}_labels": str(out / split / "labels")})
    paths.update(train_base=str(out / "train_base.json"), train_all=str(out / "train_all.json"),
                 val=str(out / "val.json"))
    params = {"seed": seed, "n_train": n_train, "n_val": n_val, "size": size}
    done = out / "world.json"
    if done.is_file() and json.loads(done.read_text()) == params:
        return paths  # written before with the same parameters (world.json is written last)
    done.unlink(missing_ok=True)
    for split, count in (("train", n_train), ("val", n_val)):
        images, anns = [], []
        for i in range(count):
            img, objects = scene(rng, size)
            name = f"{split}_{i:05d}.png"
            _save_png(img, out / split / "images" / name)
            semantic = np.zeros((size, size), np.uint8)
            for o in objects:
                semantic[o.mask] = o.label + 1
            _save_png(semantic, out / split / "labels" / name)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            for o in objects:
                x0, y0, x1, y1 = o.box
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": o.label + 1,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(o.mask.sum()), "iscrowd": 0,
                             "segmentation": _rle(o.mask), "colour": o.colour})
        full = {"images": images, "annotations": anns, "categories": categories}
        if split == "train":
            base = {**full, "annotations": [a for a in anns if a["category_id"] - 1 not in novel]}
            atomic_json_dump(base, out / "train_base.json")
            atomic_json_dump(full, out / "train_all.json")
        else:
            atomic_json_dump(full, out / "val.json")
    atomic_json_dump(vocabulary_entries(), out / "vocabulary.json", indent=1)
    atomic_json_dump(params, done)
    return paths
