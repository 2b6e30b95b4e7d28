"""Exported models on onnxruntime vs the same models in eager torch: per-image latency and how equal the
outputs are, at several vocabulary sizes; prints one table.

    python benchmarks/export.py [--runs 7] [--classes 5 80 1203] [--size 480 640]

Models: the shipped synthetic-world ViLD (model_zoo/synthetic, ensemble mode) and the synthetic MaskCLIP
config, both exported with `tools/export.py`'s code to a temporary folder. Image: the synthetic demo image
resized to --size (default 480x640; the detector resizes it to its own input size, 128 on the short side,
MaskCLIP runs at the image's size). Vocabularies: the first 5 synthetic shapes, COCO's 80 classes,
LVIS's 1203. Latency is one `predict(image)` with the vocabulary already embedded (both APIs embed once per
vocabulary), torch and onnxruntime calls interleaved after a warm-up; the ratio is torch's median over
onnxruntime's (> 1: onnxruntime faster). Equality: detector, the number of detections, the share of
detections with torch's label at the same rank, and the largest box and score differences; segmenter, the
share of pixels with torch's label and the largest probability difference. A last table times embedding a
new vocabulary: the teacher in torch (its cache off) vs the exported text encoder.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars between the table's rows

from ovclip.deploy import load_exported  # noqa: E402
from ovclip.text import text_embeddings  # noqa: E402
from ovclip.vocabulary import load_vocabulary  # noqa: E402
from timing import interleaved_times, spread  # noqa: E402  (benchmarks/timing.py)

DETECTOR = (ROOT / "configs/vild/vild_teacher-rn_fpn_synthetic-cpu.py",
            ROOT / "model_zoo/synthetic/vild_teacher-rn_synthetic.pth")
SEGMENTER = (ROOT / "configs/maskclip/maskclip_synthetic-cpu.py", None)
VOCABULARIES = {5: "diamond, triangle, hexagon, circle, star", 80: "coco", 1203: "ov-lvis"}


def vocabulary(classes: int):
    """The benchmark's vocabulary of that size (a builtin's first `classes` classes otherwise)."""
    if classes in VOCABULARIES:
        return load_vocabulary(VOCABULARIES[classes])
    names = load_vocabulary("ov-lvis").names
    if classes > len(names):
        raise SystemExit(f"--classes: at most {len(names)}")
    return load_vocabulary(names[:classes])


def detector_equality(a, b) -> str:
    """'detections, same label, max box diff, max score diff' of torch's `a` vs onnxruntime's `b`."""
    n = min(len(a), len(b))
    same = float(np.mean(a.labels.numpy()[:n] == b.labels[:n])) if n else 1.0
    box = float(np.abs(a.boxes.numpy()[:n] - b.boxes[:n]).max()) if n else 0.0
    score = float(np.abs(a.scores.numpy()[:n] - b.scores[:n]).max()) if n else 0.0
    return f"{len(a)} / {len(b)} detections, {100 * same:.1f}% same label, boxes {box:.1e} px, scores {score:.1e}"


def segmenter_equality(a, b) -> str:
    """'pixels with the same label, max probability diff' of torch's `a` vs onnxruntime's `b`."""
    same = float(np.mean(a.labels.numpy() == b.labels))
    return f"{100 * same:.2f}% pixels same label, probabilities {float(np.abs(a.scores.numpy() - b.scores).max()):.1e}"


def rows(kind: str, model, onnx, image: np.ndarray, sizes: list[int], runs: int) -> list[str]:
    """Latency and equality rows of one model."""
    out = []
    for classes in sizes:
        vocab = vocabulary(classes)
        model.set_vocabulary(vocab)
        onnx.set_vocabulary(vocab)
        with torch.inference_mode():
            times = interleaved_times({"torch": lambda: model.predict(image), "onnx": lambda: onnx.predict(image)},
                                      runs)
            a, b = model.predict(image), onnx.predict(image)
        equal = detector_equality(a, b) if kind == "detector" else segmenter_equality(a, b)
        ratio = statistics.median(times["torch"]) / statistics.median(times["onnx"])
        out.append(f"| {kind} | {classes} | {spread([t * 1000 for t in times['torch']])} | "
                   f"{spread([t * 1000 for t in times['onnx']])} | {ratio:.2f} | {equal} |")
    return out


def text_rows(model, onnx, sizes: list[int], runs: int) -> list[str]:
    """Time to embed a new vocabulary: the torch teacher (cache off) vs the exported text encoder."""
    out = []
    text = model.model.text
    for classes in sizes:
        vocab = vocabulary(classes)
        times = interleaved_times({
            "torch": lambda: text_embeddings(text.teacher, vocab, text.source.templates, cache_dir=False,
                                             progress=False),
            "onnx": lambda: onnx.text(vocab)}, runs)
        ratio = statistics.median(times["torch"]) / statistics.median(times["onnx"])
        out.append(f"| {classes} | {spread([t * 1000 for t in times['torch']])} | "
                   f"{spread([t * 1000 for t in times['onnx']])} | {ratio:.2f} |")
    return out


def main(argv=None) -> int:
    """Export both models and print the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--classes", type=int, nargs="+", default=[5, 80, 1203])
    p.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    args = p.parse_args(argv)
    import onnxruntime as ort

    from ovd import Detector
    from ovd.export import export_detector
    from ovseg import Segmenter
    from ovseg.export import export_segmenter

    picture = Image.open(ROOT / "model_zoo/synthetic/demo.png").convert("RGB")
    image = np.asarray(picture.resize((args.size[1], args.size[0]), Image.BILINEAR))
    print(f"CPU, torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}, "
          f"image {args.size[1]}x{args.size[0]}, ms per image: median [min - max] of {args.runs} interleaved runs\n")
    print("| model | classes | torch ms | onnxruntime ms | torch / onnxruntime | outputs: torch vs onnxruntime |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        detector = Detector.from_config(*DETECTOR)
        export_detector(detector.model, Path(tmp) / "det")
        for line in rows("detector", detector, load_exported(Path(tmp) / "det"), image, args.classes, args.runs):
            print(line, flush=True)
        segmenter = Segmenter.from_config(*SEGMENTER)
        export_segmenter(segmenter.model, Path(tmp) / "seg")
        onnx_seg = load_exported(Path(tmp) / "seg")
        for line in rows("segmenter", segmenter, onnx_seg, image, args.classes, args.runs):
            print(line, flush=True)
        print("\nEmbedding a new vocabulary (the synthetic teacher, its templates; ms)\n")
        print("| classes | torch (cache off) | exported text encoder | torch / onnxruntime |")
        print("|---|---|---|---|")
        for line in text_rows(segmenter, onnx_seg, args.classes, max(3, args.runs // 2)):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
