"""Evaluation speed: faster-coco-eval (the evaluators' default) against the reference pycocotools / lvis-api,
on the same detections, with the equality of their numbers. Prints one table (medians of several runs,
ratios within the run) and the import time of the evaluators.

    python benchmarks/evaluation.py [--coco-images 2000] [--lvis-images 1000] [--repeats 3]

COCO: `--coco-images` images x 80 classes, 100 detections per image (200k at 2000 images), through
DetectionEvaluator. LVIS: `--lvis-images` images x 1203 classes, 250 detections per image, through
LvisEvaluator (bbox). Ground truth and detections are random but seeded: boxes near each object (a
true positive at some IoU) and random false positives, scores uniform.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovclip.vocabulary import Vocabulary  # noqa: E402
from ovd.evaluation import DetectionEvaluator, LvisEvaluator  # noqa: E402


def make_data(root: Path, n_images: int, n_classes: int, per_image: int, lvis: bool, seed: int = 0):
    """A ground-truth file and the detections of every image: (path, vocabulary, {image: (boxes, scores, labels)})."""
    rng = np.random.default_rng(seed)
    freq = "rcf"
    cats = [{"id": i + 1, "name": f"class {i}", **({"frequency": freq[i % 3]} if lvis else {})}
            for i in range(n_classes)]
    images, anns, dets = [], [], {}
    for im in range(1, n_images + 1):
        present = rng.choice(n_classes, 5, replace=False)
        entry = {"id": im, "file_name": f"{im}.jpg", "width": 640, "height": 480}
        if lvis:
            entry.update(neg_category_ids=[int(c) + 1 for c in rng.choice(n_classes, 5) if c not in present],
                         not_exhaustive_category_ids=[int(present[0]) + 1])
        images.append(entry)
        boxes, labels = [], []
        for c in present:
            for _ in range(int(rng.integers(1, 4))):
                x, y = rng.uniform(0, 540), rng.uniform(0, 380)
                w, h = rng.uniform(10, 100, 2)
                anns.append({"id": len(anns) + 1, "image_id": im, "category_id": int(c) + 1, "bbox": [x, y, w, h],
                             "area": float(w * h), "iscrowd": 0})
                dx, dy = rng.normal(0, 0.1 * w), rng.normal(0, 0.1 * h)
                boxes.append([x + dx, y + dy, x + dx + w, y + dy + h])
                labels.append(int(c))
        while len(boxes) < per_image:
            x, y = rng.uniform(0, 540), rng.uniform(0, 380)
            w, h = rng.uniform(10, 100, 2)
            boxes.append([x, y, x + w, y + h])
            labels.append(int(rng.integers(0, n_classes)))
        dets[im] = (torch.tensor(boxes[:per_image], dtype=torch.float32),
                    torch.tensor(rng.uniform(size=per_image), dtype=torch.float32),
                    torch.tensor(labels[:per_image]))
    path = root / ("lvis.json" if lvis else "coco.json")
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    vocab = Vocabulary(tuple((c["name"],) for c in cats), ids=tuple(c["id"] for c in cats),
                       frequency=tuple(c["frequency"] for c in cats) if lvis else None)
    return path, vocab, dets


def run(make, dets) -> tuple[float, dict]:
    """Wall time of building an evaluator, feeding every image and evaluating; its metrics."""
    start = time.perf_counter()
    ev = make()
    for im, (b, s, lab) in dets.items():
        ev.process(im, b, s, lab)
    with contextlib.redirect_stdout(io.StringIO()):  # the evaluators print their table
        metrics = ev.evaluate()
    return time.perf_counter() - start, metrics


def import_seconds(repeats: int) -> float:
    """Median wall time of `from ovd.evaluation import DetectionEvaluator` in a fresh interpreter."""
    code = "import time; t = time.perf_counter(); from ovd.evaluation import DetectionEvaluator; " \
           "print(time.perf_counter() - t)"
    root = Path(__file__).resolve().parents[1]
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                                                  text=True, check=True).stdout) for _ in range(repeats))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coco-images", type=int, default=2000)
    p.add_argument("--lvis-images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("COCO", *make_data(Path(tmp), args.coco_images, 80, 100, lvis=False),
                  lambda path, vocab, backend: DetectionEvaluator(path, vocab, backend=backend, image_set="all")),
                 ("LVIS", *make_data(Path(tmp), args.lvis_images, 1203, 250, lvis=True),
                  lambda path, vocab, backend: LvisEvaluator(path, vocab, backend=backend))]
        for name, path, vocab, dets, build in cases:
            times, metrics = {}, {}
            for backend in ("reference", "faster"):
                runs = [run(lambda: build(path, vocab, backend), dets) for _ in range(args.repeats)]
                times[backend] = statistics.median(t for t, _ in runs)
                metrics[backend] = runs[0][1]
            diff = max(abs(metrics["faster"][k] - metrics["reference"][k]) for k in metrics["reference"]
                       if isinstance(metrics["reference"][k], float) and not np.isnan(metrics["reference"][k]))
            n = sum(len(d[1]) for d in dets.values())
            rows.append((name, len(dets), len(vocab), n, times["reference"], times["faster"], diff))
    print("\n| dataset | images | classes | detections | reference s | faster-coco-eval s | speed-up | "
          "max metric difference |\n|---|---|---|---|---|---|---|---|")
    for name, images, classes, n, ref, fast, diff in rows:
        print(f"| {name} | {images} | {classes} | {n} | {ref:.2f} | {fast:.2f} | {ref / fast:.1f}x | {diff:.1e} |")
    print(f"\nimport of ovd.evaluation in a fresh interpreter: {import_seconds(args.repeats):.2f} s "
          f"(median of {args.repeats})")


if __name__ == "__main__":
    main()
