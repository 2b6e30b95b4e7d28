"""OV-DETR's class bank: for each class, the teacher's image embeddings of annotated boxes of that class
(ground truth of the base classes, and any pseudo-annotations in the file: OV-DETR's novel proposals),
from which its training conditions draw image queries. As the reference's scripts/save_clip_features.py,
`preprocess(image.crop(bbox))`: each box alone, its corners rounded to pixels (PIL's crop rounds), made the
teacher's input as the teacher's own preprocess makes an image (`Teacher.resize_mode` and
`Teacher.interpolation`): for CLIP's "shortest" mode, the shorter side to the input size and the centre
square (crop "centre"); for a teacher that squashes, as the synthetic world's (trained on squashed crops),
the whole box stretched (crop "resize"). The reference skips a box when `bbox[1] < 16 or bbox[2] < 16`: its
top y and its width in COCO's xywh (a box within 16 pixels of the image's top is skipped, a low one kept;
likely meant as width and height): `skip="reference"`, the default; `skip="sides"` skips boxes narrower or
lower than `min_side` instead.

    from ovd.data.class_bank import build_class_bank
    build_class_bank(teacher, "train_with_pseudo.json", "train/images", "ov-coco", "class_bank.safetensors")
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ovclip.errors import UserInputError
from ovclip.io import atomic_write, read_image
from ovclip.regions import check_crop, crop_interpolation, region_embeddings
from ovclip.teacher import Teacher
from ovclip.vocabulary import Vocabulary, load_vocabulary

from .coco import load_detection_annotations, merge_pseudo_annotations

MIN_SIDE = 16  # the reference's bound
SKIPS = ("reference", "sides")  # which boxes are under it: the top y or the width (reference); a side


class ClassBankError(UserInputError, ValueError):
    """A class-bank file is missing or does not fit the model."""


def build_class_bank(teacher: Teacher, ann_file: "str | Path", img_dir: "str | Path",
                     vocabulary: "str | Sequence[str] | Vocabulary", out_file: "str | Path",
                     pseudo_annotations: "str | Sequence[str] | None" = None, min_side: int = MIN_SIDE,
                     progress: bool = True, crop: Optional[str] = None, skip: str = "reference") -> dict[str, int]:
    """Embed every annotated box of `ann_file` (and of the `pseudo_annotations` files, as the training
    dataset merges them) that `skip` keeps (see SKIPS: "reference", the top y and the width reach
    `min_side` pixels; "sides", the width and the height) (one crop, no context, made the teacher's input
    as `crop` says, one of ovclip.regions.CROPS; by default as the teacher's preprocess, `teacher_crop`, with its
    kernel) and write the embeddings per class name to `out_file` (safetensors); returns the count per class."""
    crop, interpolation = (teacher_crop(teacher), teacher.interpolation) if crop is None else (crop, None)
    check_crop(crop, interpolation)
    if skip not in SKIPS:
        raise ValueError(f"skip must be one of {SKIPS}, got {skip!r}")
    records, vocab, _ = load_detection_annotations(ann_file, img_dir, vocabulary, train_classes="all")
    if pseudo_annotations:
        merge_pseudo_annotations(records, vocab, pseudo_annotations, "one")
    bank: dict[int, list[torch.Tensor]] = defaultdict(list)
    for rec in tqdm(records, desc="class bank", unit="image", disable=not progress):
        boxes = torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4)
        second = boxes[:, 1] if skip == "reference" else boxes[:, 3] - boxes[:, 1]  # xywh's bbox[1]: y, or h
        keep = ((boxes[:, 2] - boxes[:, 0]) >= min_side) & (second >= min_side)
        if not keep.any():
            continue
        # PIL's crop rounds the corners (half to even, as torch.round)
        r = region_embeddings(teacher, read_image(rec.path), boxes[keep].round(), scales=(1.0,), crop=crop,
                              interpolation=interpolation)
        for label, emb, ok in zip(torch.as_tensor(rec.labels)[keep].tolist(), r.embeddings, r.valid.tolist()):
            if ok:
                bank[label].append(emb.float())
    tensors = {vocab.names[c]: torch.stack(rows).contiguous() for c, rows in sorted(bank.items())}
    if not tensors:
        raise ClassBankError(f"{ann_file}: no box passes the {min_side}-pixel bound (skip={skip!r}): nothing to put "
                             f"in a class bank")
    meta = {"teacher": teacher.fingerprint, "spec": str(teacher.spec), "crop": crop, "skip": skip,
            "interpolation": crop_interpolation(crop, interpolation)}
    atomic_write(Path(out_file), lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return {name: len(t) for name, t in tensors.items()}


def teacher_crop(teacher: Teacher) -> str:
    """The crop (ovclip.regions.CROPS) that makes a box the teacher's input as its own preprocess makes an
    image: the centre square for CLIP's "shortest" resize mode, the whole box for "squash"."""
    crops = {"shortest": "centre", "squash": "resize"}
    if teacher.resize_mode not in crops:
        raise ValueError(f"teacher {teacher.spec!r} pads its inputs (resize mode {teacher.resize_mode!r}), which "
                         f"class-bank crops do not do: pass crop='centre' or crop='resize'")
    return crops[teacher.resize_mode]


def load_class_bank(path: "str | Path", vocabulary: Vocabulary, teacher: Teacher) -> dict[int, torch.Tensor]:
    """Vocabulary position -> (n, D) embeddings, for the classes of `vocabulary` the bank has (by name);
    a bank made with another teacher is an error."""
    path = Path(path)
    if not path.is_file():
        raise ClassBankError(f"class bank not found: {path} (make it with ovd.data.class_bank.build_class_bank from "
                             f"the training annotations, or set model.conditioning.class_bank=None for text "
                             f"conditions only)")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("teacher") != teacher.fingerprint:
            raise ClassBankError(f"{path} was made with another teacher ({meta.get('spec')}), not this model's "
                                 f"{teacher.spec!r}: make it again with this teacher")
        names = {name: f.get_tensor(name) for name in f.keys()}
    vocab = load_vocabulary(vocabulary)
    return {i: names[n] for i, n in enumerate(vocab.names) if n in names}
