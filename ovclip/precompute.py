"""Running the teacher over a dataset's boxes into a feature store: resumable, shardable across ranks."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from .coco import AnnotationError, load_coco_images, load_proposals
from .errors import UserInputError
from .io import ImageReadError, read_image
from .options import ConfigError, resolve_sections
from .regions import region_embeddings
from .store import StoreWriter
from .teacher import load_teacher

log = logging.getLogger(__name__)

LISTED_BAD_IMAGES = 10  # unreadable images named one by one in the log; the rest are only counted


class PrecomputeError(UserInputError, RuntimeError):
    """A precompute job could not store anything from what it was given."""


# The keys a precompute config may have, with their defaults: unknown keys are errors, not ignored.
DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": {"spec": None, "device": "auto", "precision": "fp32"},
    "dataset": {"ann_file": None, "img_dir": None, "proposals": None, "max_regions": 300, "min_score": 0.0},
    "region": {"scales": (1.0, 1.5), "batch_size": 64},
    "store": {"shard_size": 64, "flush_seconds": 60.0},
    "run": {"on_bad_image": "skip"},
}


def resolve_config(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Fill defaults into a precompute config and reject unknown sections or keys by name."""
    out = resolve_sections(cfg, DEFAULTS, (("teacher", "spec"), ("dataset", "ann_file"), ("dataset", "img_dir")))
    check_run_section(out["run"])
    return out


def check_run_section(run: Mapping[str, Any]) -> None:
    """A dataset job's `run` section (precompute, pseudo-labels): on_bad_image is 'skip' or 'error'."""
    if run["on_bad_image"] not in ("skip", "error"):
        raise ConfigError("run.on_bad_image must be 'skip' or 'error'")


def pick_device(device: str) -> str:
    """'auto' -> this rank's GPU if there is one, else the CPU."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return "cpu"


def check_inputs(dataset: Mapping[str, Any]) -> None:
    """Refuse a missing annotation file, image folder or proposals file by its config key, before any work."""
    for key, exists, what in (("ann_file", Path.is_file, "annotation file"), ("img_dir", Path.is_dir, "image folder"),
                              ("proposals", Path.is_file, "proposals file")):
        path = dataset[key]
        if path and not exists(Path(path)):
            raise ConfigError(f"dataset.{key}: {what} not found: {path}; fix the path in the config or with "
                              f"--cfg-options dataset.{key}=PATH")


class BadImages:
    """The unreadable images of one rank's share of a dataset job: each is skipped and counted (the first
    LISTED_BAD_IMAGES named in the log) with on_bad_image='skip', or stops the job with 'error'."""

    def __init__(self, on_bad_image: str, rank: int, world_size: int, mine: int):
        self.on_bad_image, self.rank, self.world_size, self.mine = on_bad_image, rank, world_size, mine
        self.count = 0
        self.failures: list[str] = []

    def read(self, rec: Any) -> "torch.Tensor | None":
        """The image of `rec` (an ImageRecord), or None when it cannot be read and is skipped."""
        try:
            return read_image(rec.path)
        except ImageReadError as e:
            if self.on_bad_image == "error":
                raise
            self.count += 1
            if len(self.failures) < LISTED_BAD_IMAGES:
                self.failures.append(f"image {rec.id}: {e}")
                log.warning("skipping %s%s", self.failures[-1], "" if len(self.failures) < LISTED_BAD_IMAGES
                            else " (further unreadable images are counted, not listed)")
            return None

    def check(self, done_any: bool, dataset: Mapping[str, Any], kept: str) -> None:
        """Raise PrecomputeError when no image of this rank could be read (and none was done before);
        warn with the count when some could not. `kept`: where finished images go ('the store')."""
        if self.count and not done_any:
            which = f"the {self.mine} images" if self.world_size == 1 else \
                f"the {self.mine} images of rank {self.rank}"
            raise PrecomputeError(
                f"none of {which} could be read, so nothing was written to {kept} (first failures: "
                f"{'; '.join(self.failures[:3])}); check dataset.img_dir ({dataset['img_dir']}) and the file_name "
                f"fields of dataset.ann_file ({dataset['ann_file']})")
        if self.count:
            log.warning("rank %d: %d of %d images could not be read and are not in %s (first: %s)", self.rank,
                        self.count, self.mine, kept, self.failures[0])


def run_precompute(cfg: Mapping[str, Any], out: str, rank: int = 0, world_size: int = 1,
                   progress: bool = True) -> dict[str, int]:
    """Embed the boxes of this rank's share of the images (every world_size-th one) into store `out`.

    Images already in the store are skipped, so a killed job resumes where it stopped; a shard found
    damaged is set aside and its images are embedded again (`damaged_shards` counts them). Unreadable
    images are skipped and counted (`bad_images`) with run.on_bad_image='skip', but a rank that can read
    none of its images raises PrecomputeError naming the first failures.
    """
    c = resolve_config(cfg)
    d = c["dataset"]
    check_inputs(d)
    images, gt_boxes = load_coco_images(d["ann_file"], d["img_dir"])
    if not images:
        raise AnnotationError(f"{d['ann_file']}: 'images' is empty, so there is nothing to precompute; "
                              f"check dataset.ann_file")
    if d["proposals"]:
        boxes_by_image = load_proposals(d["proposals"], d["max_regions"], d["min_score"])
        source = "proposals"
    else:
        boxes_by_image = {k: v[: d["max_regions"]] for k, v in gt_boxes.items()}
        source = "annotations"
    teacher = load_teacher(c["teacher"]["spec"], device=pick_device(c["teacher"]["device"]),
                           precision=c["teacher"]["precision"])
    scales = [float(s) for s in c["region"]["scales"]]
    meta = {"embed_dim": teacher.embed_dim, "teacher": teacher.spec, "scales": scales, "boxes": source}
    stats = {"images": 0, "skipped_done": 0, "bad_images": 0, "regions": 0, "damaged_shards": 0}
    mine = images[rank::world_size]
    bad = BadImages(c["run"]["on_bad_image"], rank, world_size, len(mine))
    with StoreWriter(out, meta, rank=rank, shard_size=c["store"]["shard_size"],
                     flush_seconds=c["store"]["flush_seconds"]) as writer:
        bar = tqdm(mine, desc=f"precompute[rank {rank}]", disable=not progress, unit="img")
        for rec in bar:
            if rec.id in writer:
                stats["skipped_done"] += 1
                continue
            boxes = boxes_by_image.get(rec.id, np.zeros((0, 4), np.float32))
            image = bad.read(rec)
            if image is None:
                continue
            if len(boxes):
                r = region_embeddings(teacher, image, torch.from_numpy(boxes), scales, c["region"]["batch_size"])
                kept_boxes, kept = r.boxes[r.valid], r.embeddings[r.valid]
            else:
                kept_boxes, kept = torch.zeros(0, 4), torch.zeros(0, teacher.embed_dim)
            writer.add(rec.id, kept_boxes, kept)
            stats["images"] += 1
            stats["regions"] += len(kept)
            bar.set_postfix(regions=stats["regions"], bad=bad.count)
        stats["damaged_shards"] = len(writer.damaged)
    stats["bad_images"] = bad.count
    bad.check(bool(stats["images"] or stats["skipped_done"]), d, f"the store {out}")
    return stats
