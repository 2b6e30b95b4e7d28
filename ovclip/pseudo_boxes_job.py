"""Pseudo-labelling a dataset with the teacher (`ovclip.pseudo_boxes`): resumable, shardable across ranks,
written as a COCO-format annotation file whose annotations are marked as pseudo and carry their scores.

Each rank appends one line per finished image to `OUT.parts/rank<R>.jsonl`; a rerun skips the images
found there (whatever number of ranks wrote them), so a killed job resumes where it stopped. Once every
rank is done, `write_pseudo_annotations` gathers the lines into OUT and removes the parts, unless some
images could not be read: then the parts stay so that a rerun does only those.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm import tqdm

from .classifier import build_text_source
from .coco import AnnotationError, load_coco_boxes, load_scored_proposals
from .io import atomic_json_dump, open_jsonl_for_append, read_jsonl
from .options import ConfigError, resolve_sections
from .precompute import DEFAULTS as PRECOMPUTE_DEFAULTS
from .precompute import BadImages, check_inputs, check_run_section, pick_device
from .pseudo_boxes import LABEL_DEFAULTS, check_label_settings, labelled_classes, pseudo_boxes
from .teacher import load_teacher
from .vocabulary import load_vocabulary, match_categories

log = logging.getLogger(__name__)

# The keys a pseudo-label config may have, with their defaults (VL-PLM's: top 100 proposals, crops at 1x
# and 1.5x, its 63 prompt templates, the novel classes); unknown keys are errors.
DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": dict(PRECOMPUTE_DEFAULTS["teacher"]),
    "dataset": {"ann_file": None, "img_dir": None, "proposals": None, "max_regions": 100, "min_score": 0.0},
    "vocabulary": {"name": None, "classes": "novel", "templates": "vild"},
    "pseudo": dict(LABEL_DEFAULTS),
    "region": {"scales": (1.0, 1.5), "batch_size": 64},
    "run": dict(PRECOMPUTE_DEFAULTS["run"]),
}
REQUIRED = (("teacher", "spec"), ("dataset", "ann_file"), ("dataset", "img_dir"), ("dataset", "proposals"),
            ("vocabulary", "name"))
SETTINGS_FILE = "settings.json"


def resolve_config(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Fill defaults into a pseudo-label config and refuse unknown sections, keys and bad values by name."""
    c = resolve_sections(cfg, DEFAULTS, REQUIRED)
    c["pseudo"] = check_label_settings(c["pseudo"])
    check_run_section(c["run"])
    return c


def parts_dir(out: "str | Path") -> Path:
    """Where the ranks of a job writing `out` keep their finished images until it is complete."""
    return Path(f"{out}.parts")


def _what_decides(c: dict) -> dict:
    """The settings the pseudo-labels depend on (not the device, batch size or bad-image policy)."""
    return json.loads(json.dumps({"teacher": c["teacher"]["spec"], "dataset": c["dataset"],
                                  "vocabulary": c["vocabulary"], "pseudo": c["pseudo"],
                                  "scales": list(c["region"]["scales"])}))


def _claim_parts(parts: Path, decides: dict) -> None:
    """Create the parts folder for these settings, or check that the one there was made with them: a resumed
    job must not mix pseudo-labels of two configs."""
    parts.mkdir(parents=True, exist_ok=True)
    settings = parts / SETTINGS_FILE
    if settings.is_file():
        found = json.loads(settings.read_text(encoding="utf-8"))
        if found != decides:
            changed = sorted(k for k in decides if found.get(k) != decides[k])
            raise ConfigError(f"{parts} holds the finished images of a run with other settings (differing: "
                              f"{', '.join(changed)}); rerun with those settings to resume it, or remove {parts} "
                              f"to start again")
    else:
        atomic_json_dump(decides, settings, indent=1)


def finished_images(out: "str | Path") -> dict[str, list]:
    """image id (as JSON text) -> its pseudo-label rows, from every rank's part file of the job writing `out`."""
    done: dict[str, list] = {}
    for part in sorted(parts_dir(out).glob("rank*.jsonl")):
        for row in read_jsonl(part):
            done[json.dumps(row["image_id"])] = row["labels"]
    return done


class PseudoBoxJob:
    """One pseudo-labelling job: its config, resolved and checked, and its annotation file, read once for
    both the labelling (`run`, every rank) and the writing of the result (`write`, rank 0). An OV-LVIS train
    file is about a gigabyte of JSON: the tool reads it once per rank, not twice."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.config = resolve_config(cfg)
        d = self.config["dataset"]
        check_inputs(d)
        self.coco = load_coco_boxes(d["ann_file"], d["img_dir"])
        if not self.coco.images:
            raise AnnotationError(f"{d['ann_file']}: 'images' is empty, so there is nothing to pseudo-label; "
                                  f"check dataset.ann_file")

    def run(self, out: str, rank: int = 0, world_size: int = 1, progress: bool = True) -> dict[str, int]:
        """Pseudo-label this rank's share of the images (every world_size-th one) into the job's parts folder.

        Row per pseudo-label: [x, y, w, h, category id, score, teacher probability, objectness]. Images with no
        proposal get none. Returns counts: images, skipped_done, bad_images, pseudo_labels, without_proposals.
        """
        c, coco = self.config, self.coco
        d, v = c["dataset"], c["vocabulary"]
        vocab = load_vocabulary(v["name"])
        category_ids = match_categories(vocab, coco.categories, d["ann_file"])
        classes = labelled_classes(vocab, v["classes"])
        others = {category_ids[i] for i in range(len(vocab)) if i not in set(classes)}
        proposals = load_scored_proposals(d["proposals"], d["max_regions"], d["min_score"], need_scores=True)
        unknown = set(proposals) - {r.id for r in coco.images}
        if unknown:
            raise AnnotationError(f"{d['proposals']}: proposals for {len(unknown)} image id(s) not in "
                                  f"{d['ann_file']} (e.g. {sorted(map(str, unknown))[:3]}); were they made for "
                                  f"another dataset?")
        parts = parts_dir(out)
        _claim_parts(parts, _what_decides(c))
        done = finished_images(out)
        teacher = load_teacher(c["teacher"]["spec"], device=pick_device(c["teacher"]["device"]),
                               precision=c["teacher"]["precision"])
        text = build_text_source(v["templates"])(teacher, vocab).float().cpu()
        scales = [float(s) for s in c["region"]["scales"]]
        stats = {"images": 0, "skipped_done": 0, "bad_images": 0, "pseudo_labels": 0, "without_proposals": 0}
        mine = coco.images[rank::world_size]
        bad = BadImages(c["run"]["on_bad_image"], rank, world_size, len(mine))
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        with open_jsonl_for_append(parts / f"rank{rank}.jsonl") as f:
            bar = tqdm(mine, desc=f"pseudo boxes[rank {rank}]", disable=not progress, unit="img")
            for rec in bar:
                if json.dumps(rec.id) in done:
                    stats["skipped_done"] += 1
                    continue
                boxes, objectness = proposals.get(rec.id, empty)
                stats["without_proposals"] += not len(boxes)
                image = bad.read(rec)
                if image is None:
                    continue
                found = pseudo_boxes(teacher, image, torch.from_numpy(boxes), torch.from_numpy(objectness), text,
                                     classes, torch.from_numpy(coco.boxes_of(rec.id, others)), scales,
                                     c["region"]["batch_size"], **c["pseudo"]) if len(boxes) else None
                rows = [] if found is None else [
                    [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2), category_ids[label],
                     round(score, 5), round(prob, 5), round(obj, 5)]
                    for (x0, y0, x1, y1), label, score, prob, obj in zip(
                        found.boxes.tolist(), found.labels.tolist(), found.scores.tolist(), found.class_probs.tolist(),
                        found.objectness.tolist())]
                f.write(json.dumps({"image_id": rec.id, "labels": rows}) + "\n")
                f.flush()
                stats["images"] += 1
                stats["pseudo_labels"] += len(rows)
                bar.set_postfix(pseudo_labels=stats["pseudo_labels"], bad=bad.count)
        stats["bad_images"] = bad.count
        bad.check(bool(stats["images"] or stats["skipped_done"]), d, str(parts))
        if stats["without_proposals"]:
            log.warning("rank %d: %d images have no proposal in %s and get no pseudo-label", rank,
                        stats["without_proposals"], d["proposals"])
        return stats

    def write(self, out: str, complete: bool = True) -> dict[str, Any]:
        """Gather every rank's finished images into the COCO-format file `out`: the images pseudo-labelled, the
        dataset's categories, and one annotation per pseudo-label (`pseudo: true`, its `score` and the two parts
        of it, a negative id as VL-PLM's so that it never collides with a ground-truth id). The parts are removed
        when the job is `complete`. Returns counts per class name."""
        c, coco = self.config, self.coco
        d = c["dataset"]
        done = finished_images(out)
        names = {cat["id"]: cat["name"] for cat in coco.categories}
        images, annotations, per_class = [], [], {}
        for rec in coco.images:
            rows = done.get(json.dumps(rec.id))
            if rows is None:
                continue
            images.append({"id": rec.id, "file_name": rec.path.relative_to(d["img_dir"]).as_posix(),
                           "width": rec.width, "height": rec.height})
            for x, y, w, h, category, score, prob, obj in rows:
                annotations.append({"id": -(len(annotations) + 1), "image_id": rec.id, "category_id": category,
                                    "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0, "pseudo": True,
                                    "score": score, "class_prob": prob, "objectness": obj})
                per_class[names[category]] = per_class.get(names[category], 0) + 1
        info = {"description": "teacher box pseudo-labels (ovclip.pseudo_boxes, VL-PLM's recipe)", "pseudo": True,
                **_what_decides(c), "complete": complete}
        atomic_json_dump({"info": info, "images": images, "categories": coco.categories, "annotations": annotations},
                         out)
        if complete:
            parts = parts_dir(out)
            for p in parts.glob("*"):
                p.unlink()
            parts.rmdir()
        return {"images": len(images), "pseudo_labels": len(annotations), "per_class": per_class}


def run_pseudo_boxes(cfg: Mapping[str, Any], out: str, rank: int = 0, world_size: int = 1,
                     progress: bool = True) -> dict[str, int]:
    """`PseudoBoxJob(cfg).run(...)`: pseudo-label this rank's share of the images into the job's parts."""
    return PseudoBoxJob(cfg).run(out, rank, world_size, progress)


def write_pseudo_annotations(cfg: Mapping[str, Any], out: str, complete: bool = True) -> dict[str, Any]:
    """`PseudoBoxJob(cfg).write(...)`: gather the finished images into the COCO-format file `out`."""
    return PseudoBoxJob(cfg).write(out, complete)
