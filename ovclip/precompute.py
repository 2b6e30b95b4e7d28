"""Running the teacher over a dataset's boxes into a feature store: resumable, shardable across ranks."""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from .coco import load_coco_images, load_proposals
from .io import ImageReadError, read_image
from .options import ConfigError
from .regions import region_embeddings
from .store import StoreWriter
from .teacher import load_teacher

log = logging.getLogger(__name__)

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
    out: dict[str, dict[str, Any]] = {}
    for section in cfg:
        if section not in DEFAULTS and not section.startswith("_"):
            raise ConfigError(f"unknown config section '{section}'; expected {sorted(DEFAULTS)}")
    for section, defaults in DEFAULTS.items():
        given = dict(cfg.get(section) or {})
        unknown = set(given) - set(defaults)
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)} in config section '{section}'; "
                              f"allowed: {sorted(defaults)}")
        out[section] = {**defaults, **given}
    for section, key in (("teacher", "spec"), ("dataset", "ann_file"), ("dataset", "img_dir")):
        if out[section][key] is None:
            raise ConfigError(f"config needs {section}.{key}")
    if out["run"]["on_bad_image"] not in ("skip", "error"):
        raise ConfigError("run.on_bad_image must be 'skip' or 'error'")
    return out


def pick_device(device: str) -> str:
    """'auto' -> this rank's GPU if there is one, else the CPU."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return "cpu"


def run_precompute(cfg: Mapping[str, Any], out: str, rank: int = 0, world_size: int = 1,
                   progress: bool = True) -> dict[str, int]:
    """Embed the boxes of this rank's share of the images (every world_size-th one) into store `out`.

    Images already in the store are skipped, so a killed job resumes where it stopped.
    """
    c = resolve_config(cfg)
    d = c["dataset"]
    images, gt_boxes = load_coco_images(d["ann_file"], d["img_dir"])
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
    stats = {"images": 0, "skipped_done": 0, "bad_images": 0, "regions": 0}
    mine = images[rank::world_size]
    with StoreWriter(out, meta, rank=rank, shard_size=c["store"]["shard_size"],
                     flush_seconds=c["store"]["flush_seconds"]) as writer:
        bar = tqdm(mine, desc=f"precompute[rank {rank}]", disable=not progress, unit="img")
        for rec in bar:
            if rec.id in writer:
                stats["skipped_done"] += 1
                continue
            boxes = boxes_by_image.get(rec.id, np.zeros((0, 4), np.float32))
            try:
                image = read_image(rec.path)
            except ImageReadError as e:
                if c["run"]["on_bad_image"] == "error":
                    raise
                stats["bad_images"] += 1
                log.warning("skipping image %s: %s", rec.id, e)
                continue
            if len(boxes):
                r = region_embeddings(teacher, image, torch.from_numpy(boxes), scales, c["region"]["batch_size"])
                kept_boxes, kept = r.boxes[r.valid], r.embeddings[r.valid]
            else:
                kept_boxes, kept = torch.zeros(0, 4), torch.zeros(0, teacher.embed_dim)
            writer.add(rec.id, kept_boxes, kept)
            stats["images"] += 1
            stats["regions"] += len(kept)
            bar.set_postfix(regions=stats["regions"], bad=stats["bad_images"])
    if stats["bad_images"]:
        log.warning("rank %d: %d unreadable images were skipped", rank, stats["bad_images"])
    return stats
