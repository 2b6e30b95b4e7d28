"""Semantic segmentation data: a folder of images and a folder of label PNGs with a class list
(ADE20k-150, the synthetic world, any dataset laid out that way)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ovclip.errors import UserInputError
from ovclip.io import ImageReadError, read_image
from ovclip.transforms import build_pipeline
from ovclip.vocabulary import Vocabulary, VocabularyError, load_vocabulary, match_categories

from .labels import BACKGROUND, IGNORE  # noqa: F401  (the datasets' label values, imported from here too)
from .registry import DATASETS, FUNCTIONS

log = logging.getLogger(__name__)


class SegDataError(UserInputError, ValueError):
    """A label file is missing, unreadable, of the wrong size or holds values outside the class list."""


def read_label(path: "str | Path") -> np.ndarray:
    """A single-channel label PNG as a (H, W) integer array."""
    path = Path(path)
    if not path.is_file():
        raise SegDataError(f"label file not found: {path}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise SegDataError(f"{path}: label PNGs must have one channel of class indices, not mode "
                                   f"'{im.mode}' (a colour-coded label image needs converting to indices)")
            return np.asarray(im).astype(np.int64)
    except (OSError, SyntaxError) as e:
        raise SegDataError(f"cannot read label file {path}: {e}") from None


def label_lookup(classes: Vocabulary, vocabulary: Vocabulary, reduce_zero_label: bool, train_classes: str,
                 source: str, zero_is_background: bool = False) -> np.ndarray:
    """Table from raw label value (0..255) to vocabulary position, IGNORE for ignored pixels.

    Raw value v stands for class v of `classes` (v - 1 with reduce_zero_label, where 0 is ignored, or
    BACKGROUND with zero_is_background);
    classes that are not in the vocabulary, and novel classes when train_classes='base', are ignored:
    their pixels never reach a loss as a label.
    """
    if train_classes not in ("all", "base"):
        raise ValueError(f"train_classes must be 'all' or 'base', not '{train_classes}'")
    if train_classes == "base" and vocabulary.split is None:
        raise VocabularyError(f"train_classes='base' needs a vocabulary with a base/novel split; "
                              f"'{vocabulary.name}' has none")
    ids = list(classes.ids) if classes.ids is not None else list(range(len(classes)))
    index = {cid: i for i, cid in enumerate(ids)}
    matched = match_categories(vocabulary, [{"id": cid, "name": n} for cid, n in zip(ids, classes.names)], source)
    lut = np.full(256, IGNORE, np.int64)
    offset = 1 if reduce_zero_label else 0
    if zero_is_background:
        if not reduce_zero_label:
            raise ValueError("zero_is_background needs reduce_zero_label=True (0 must not be a class)")
        lut[0] = BACKGROUND
    for pos, cls in enumerate(index[cid] for cid in matched):
        if train_classes == "base" and vocabulary.split[pos] != "base":
            continue
        lut[cls + offset] = pos
    return lut


@DATASETS.register_module()
class SegDataset(Dataset):
    """Images in `img_dir`, label PNGs of the same stem in `ann_dir`; label value k is class k of
    `classes` (k + 1 with `reduce_zero_label`, ADE20k's convention, where 0 is ignored).
    `zero_is_background=True` marks 0 as labelled background instead (the synthetic world): neither a
    class nor open to pseudo-labels, as VOC's background in the zero-shot protocol of ZS3Net / MaskCLIP+.

    `vocabulary` (default: `classes`) is what the model predicts; labels are mapped to its positions by
    name. `train_classes="base"` ignores the novel classes' pixels, so unseen labels never reach training.
    A missing or corrupt image is skipped with a warning (`on_bad_image="skip"`) or raises (`"error"`);
    a missing label file, a size mismatch or an out-of-range label always raises, naming the file.
    """

    def __init__(self, img_dir: str, ann_dir: str, classes: "Vocabulary | str | Sequence[str]",
                 vocabulary: "Vocabulary | str | Sequence[str] | None" = None, reduce_zero_label: bool = True,
                 zero_is_background: bool = False, train_classes: str = "all", img_suffix: str = ".jpg",
                 seg_suffix: str = ".png",
                 pipeline: Optional[Sequence[Mapping]] = None, on_bad_image: str = "error",
                 max_images: Optional[int] = None):
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"on_bad_image must be 'skip' or 'error', not '{on_bad_image}'")
        self.img_dir, self.ann_dir = Path(img_dir), Path(ann_dir)
        for name, folder in (("img_dir", self.img_dir), ("ann_dir", self.ann_dir)):
            if not folder.is_dir():
                raise SegDataError(f"{name} is not a folder: {folder}")
        self.classes = load_vocabulary(classes)
        self.vocabulary = load_vocabulary(vocabulary) if vocabulary is not None else self.classes
        self.reduce_zero_label, self.on_bad_image = reduce_zero_label, on_bad_image
        self.lut = label_lookup(self.classes, self.vocabulary, reduce_zero_label, train_classes,
                                f"the class list of {self.ann_dir}", zero_is_background)
        self.num_raw = len(self.classes) + (1 if reduce_zero_label else 0)
        images = sorted(p for p in self.img_dir.iterdir() if p.name.endswith(img_suffix))
        if max_images:
            images = images[:max_images]
        if not images:
            raise SegDataError(f"no '*{img_suffix}' images in {self.img_dir} (set img_suffix)")
        self.samples = [(p, self.ann_dir / (p.name[: -len(img_suffix)] + seg_suffix)) for p in images]
        missing = [str(lab) for _, lab in self.samples if not lab.is_file()]
        if missing:
            raise SegDataError(f"{len(missing)} label files are missing, e.g. {missing[0]} "
                               f"(each image needs <stem>{seg_suffix} in {self.ann_dir})")
        self.pipeline = build_pipeline(pipeline)
        self.bad_images = 0

    @property
    def metainfo(self) -> dict:
        """Class names and split, saved in checkpoints by mmengine."""
        return self.vocabulary.metainfo()

    def __len__(self) -> int:
        return len(self.samples)

    def load_label(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        """The label map of sample `index` as vocabulary positions (IGNORE elsewhere), checked against
        the image size and the class list."""
        img_path, path = self.samples[index]
        raw = read_label(path)
        if raw.shape != tuple(size):
            raise SegDataError(f"{path} is {raw.shape[1]}x{raw.shape[0]} but its image {img_path} is "
                               f"{size[1]}x{size[0]}: labels must have the image's size")
        bad = (raw != IGNORE) & ((raw < 0) | (raw >= self.num_raw))
        if bad.any():
            values = sorted(set(np.unique(raw[bad]).tolist()))
            zero = " after reduce_zero_label" if self.reduce_zero_label else ""
            raise SegDataError(f"{path} has label values {values[:10]} outside the {len(self.classes)} classes of "
                               f"the class list (0..{self.num_raw - 1}{zero}, 255 ignored): check the class list "
                               f"and reduce_zero_label")
        return torch.from_numpy(self.lut[raw])

    def __getitem__(self, index: int) -> dict:
        for attempt in range(len(self.samples)):
            i = (index + attempt) % len(self.samples)
            img_path = self.samples[i][0]
            try:
                image = read_image(img_path)
            except ImageReadError as e:
                if self.on_bad_image == "error":
                    raise ImageReadError(f"{e} (set on_bad_image='skip' to skip unreadable images)") from None
                self.bad_images += 1
                log.warning("skipped unreadable image (%d so far in this process): %s", self.bad_images, e)
                continue
            return self._sample(i, image)
        raise ImageReadError(f"none of the {len(self.samples)} images of {self.img_dir} can be read")

    def _sample(self, index: int, image: torch.Tensor) -> dict:
        h, w = image.shape[-2:]
        label = self.load_label(index, (h, w))
        if self.pipeline is not None:
            # Shifted by one so that whatever a transform pads or fills with (0) comes back as IGNORE.
            shifted = tv_tensors.Mask(((label + 1) % 256).to(torch.uint8))
            image, mask = self.pipeline(tv_tensors.Image(image), shifted)
            image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()
            label = torch.where(mask == 0, torch.full_like(mask, IGNORE), mask - 1)
        sample: dict[str, Any] = {"gt": label.long(), "img_path": str(self.samples[index][0]), "ori_shape": (h, w)}
        return {"inputs": image, "data_samples": sample}


@FUNCTIONS.register_module()
def seg_collate(batch: Sequence[dict]) -> dict:
    """Lists of images (of any size) and of sample dicts: the model batches and resizes them itself."""
    return {"inputs": [b["inputs"] for b in batch], "data_samples": [b["data_samples"] for b in batch]}
