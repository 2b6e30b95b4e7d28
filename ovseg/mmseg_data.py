"""mmsegmentation's datasets and transforms feeding ovseg models.

`MMSegDataset` builds any dataset registered with mmseg (ADE20KDataset, PascalVOCDataset,
PascalContextDataset59, COCOStuffDataset, CityscapesDataset, BaseSegDataset, and `SyntheticShapesDataset`
for the synthetic world), with mmseg's own pipeline ending in `PackSegInputs`, and hands ovseg's samples
on: the image as an RGB uint8 (3, H, W) tensor (mmseg loads BGR), the label map as vocabulary positions
(IGNORE for ignored pixels, BACKGROUND for labelled background), the image path and its original size.
Labels are matched to the vocabulary by class name (case, spaces and underscores aside: mmseg's "pottedplant"
is the vocabulary's "potted plant"), as `ovseg.data.SegDataset` does; with
`train_classes="base"` novel classes' pixels are ignored, so unseen labels never reach training.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from ovclip.vocabulary import Vocabulary, load_vocabulary, parse_vocabulary

from .data import SegDataError, label_lookup
from .mmseg_compat import import_mmseg
from .registry import DATASETS

SYNTHETIC_CLASSES = "synthetic-shapes"


def _register_synthetic(registry: Any) -> None:
    """mmseg dataset class of the synthetic world (ovclip.synthetic): label PNGs hold 0 for background and
    k + 1 for shape k of the builtin 'synthetic-shapes' vocabulary (use with zero_is_background=True)."""
    if registry.get("SyntheticShapesDataset") is not None:
        return
    from mmseg.datasets import BaseSegDataset
    names = ("background", *load_vocabulary(SYNTHETIC_CLASSES).names)

    class SyntheticShapesDataset(BaseSegDataset):
        METAINFO = dict(classes=names, palette=[[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256]
                                                for i in range(len(names))])

        def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = ".png", **kwargs):
            super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, reduce_zero_label=False,
                             **kwargs)

    registry.register_module(name="SyntheticShapesDataset", module=SyntheticShapesDataset)


def _squashed(name: str) -> str:
    return "".join(c for c in name.lower() if c not in " _")


@DATASETS.register_module()
class MMSegDataset(Dataset):
    """An mmseg dataset `dataset` (its config, mmseg's pipeline included) as an ovseg dataset.

    `vocabulary` (default: the dataset's classes) is what the model predicts. `zero_is_background=True`:
    the dataset's class 0 is labelled background (neither a class nor open to pseudo-labels; the synthetic
    world, VOC with its background) and class k its class list's k-th after it."""

    def __init__(self, dataset: dict, vocabulary: "Vocabulary | str | Sequence[str] | None" = None,
                 train_classes: str = "all", zero_is_background: bool = False):
        import_mmseg("datasets")
        from mmseg.registry import DATASETS as MMSEG_DATASETS
        with MMSEG_DATASETS.switch_scope_and_registry("mmseg") as registry:
            _register_synthetic(registry)
            self.dataset = registry.build(dict(dataset))
        names = list(self.dataset.metainfo["classes"])
        self.num_raw = len(names)  # label values the dataset's pipeline gives, 255 aside
        if zero_is_background:
            if not names or names[0] != "background":
                raise SegDataError(f"zero_is_background=True needs the dataset's class 0 to be 'background', not "
                                   f"{names[:1]} ({type(self.dataset).__name__})")
            names = names[1:]
        self.vocabulary = load_vocabulary(vocabulary) if vocabulary is not None else None
        if self.vocabulary is not None:  # mmseg writes some names as one word ("pottedplant", "tvmonitor")
            spelling = {_squashed(n): n for n in self.vocabulary.names}
            names = [spelling.get(_squashed(n), n) for n in names]
        self.classes = parse_vocabulary(", ".join(n.replace(",", " ") for n in names), name=type(self.dataset).__name__)
        self.vocabulary = self.vocabulary or self.classes
        by_name = dataclasses.replace(self.vocabulary, ids=None)  # mmseg's classes have names, not category ids
        self.lut = torch.from_numpy(label_lookup(self.classes, by_name, zero_is_background, train_classes,
                                                 f"the classes of {type(self.dataset).__name__}", zero_is_background))
        if not len(self.dataset):
            raise SegDataError(f"{type(self.dataset).__name__} found no images under {self.dataset.data_root} / "
                               f"{self.dataset.data_prefix} (check data_root, data_prefix and img_suffix)")

    @property
    def metainfo(self) -> dict:
        """Class names and split, saved in checkpoints by mmengine."""
        return self.vocabulary.metainfo()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        info = self.dataset.get_data_info(index)
        try:
            packed = self.dataset[index]
        except (FileNotFoundError, OSError, ValueError) as e:
            raise SegDataError(f"cannot load sample {index} ({info.get('img_path')}, {info.get('seg_map_path')}): "
                               f"{e}") from None
        sample = packed["data_samples"]
        gt = sample.gt_sem_seg.data[0].long()
        raw = gt[gt != 255]
        if len(raw) and int(raw.max()) >= self.num_raw:
            raise SegDataError(f"{info.get('seg_map_path')} has label value {int(raw.max())}, outside the "
                               f"{self.num_raw} classes of {type(self.dataset).__name__} (check reduce_zero_label)")
        return {"inputs": packed["inputs"].flip(0).contiguous(),  # mmseg loads BGR; ovseg models take RGB
                "data_samples": {"gt": self.lut[gt], "img_path": sample.img_path,
                                 "ori_shape": tuple(sample.ori_shape)}}
