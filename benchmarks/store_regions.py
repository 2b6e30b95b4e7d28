"""Where ViLD's distilled regions lie: ViLD-text's top class-agnostic proposals on the train images of a
CPU-benchmark seed (the regions `tools/bench_ov.py` embeds into ViLD's feature store), against every object
of those images, base and novel (the world's withheld annotations), from the checkpoint the bench left.

    python benchmarks/store_regions.py --seed 3 [--work-dir work_dirs/bench_ov/full] [--nms 0.7 0.5 0.3]

Per region source (the RPN's own NMS at IoU 0.7, then optionally a second NMS at a lower IoU before the top
`num_regions` are kept): the share of regions on an object (IoU >= 0.5 with one), on a novel object, and the
share of novel objects some region covers (IoU >= 0.5).
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from torchvision.ops import box_iou, nms

from ovclip.io import read_image, to_unit_float
from ovclip.vocabulary import load_vocabulary
from ovd import Detector

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "vild_teacher-rn_fpn_synthetic-cpu.py"


@torch.inference_mode()
def coverage(model_dir: Path, world: Path, nms_ious: list[float], images: int) -> list[tuple[float, dict]]:
    """(row name, {on_object, on_novel, novel_covered, regions_per_image}) per region source: the RPN's own
    NMS alone for an IoU at or above its threshold, a second NMS at that IoU below it."""
    from ovd.bench import distill_settings
    num_regions = distill_settings(ROOT / "configs")["num_regions"]
    det = Detector.from_config(model_dir / CONFIG, model_dir / "iter_550.pth")
    model = det.model.detector.eval()
    vocab = load_vocabulary(str(world / "vocabulary.json"))
    novel_ids = {vocab.ids[i] for i in vocab.novel}
    data = json.loads((world / "train_all.json").read_text())
    objects: dict[int, list[tuple[list[float], bool]]] = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        objects.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], a["category_id"] in novel_ids))
    files = {im["id"]: im["file_name"] for im in data["images"]}
    ids = sorted(objects)[:images]
    proposals = {i: model.proposals([to_unit_float(read_image(world / "train" / "images" / files[i]))])[0]
                 for i in ids}
    out = []
    for iou in nms_ious:
        on_object = on_novel = regions = covered = novel = 0
        for i in ids:
            boxes, scores = proposals[i]
            if iou < model.rpn.nms_thresh:
                boxes = boxes[nms(boxes, scores, iou)]
            boxes = boxes[:num_regions]
            gt = torch.tensor([b for b, _ in objects[i]], dtype=torch.float32)
            is_novel = torch.tensor([n for _, n in objects[i]])
            overlap = box_iou(boxes, gt)
            best, which = overlap.max(1)
            on_object += int((best >= 0.5).sum())
            on_novel += int(((best >= 0.5) & is_novel[which]).sum())
            regions += len(boxes)
            covered += int(((overlap.max(0).values >= 0.5) & is_novel).sum())
            novel += int(is_novel.sum())
        name = f"RPN NMS {model.rpn.nms_thresh} (the bench's)" if iou >= model.rpn.nms_thresh else f"+ NMS {iou}"
        out.append((name, {"on_object": 100 * on_object / max(1, regions), "on_novel": 100 * on_novel / max(1, regions),
                          "novel_covered": 100 * covered / max(1, novel), "regions_per_image": regions / len(ids)}))
    return out


def main(argv=None) -> int:
    """Print the table for one seed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--work-dir", default="work_dirs/bench_ov/full", help="tools/bench_ov.py's work dir (full run)")
    p.add_argument("--nms", type=float, nargs="+", default=[0.7, 0.5, 0.3],
                   help="second NMS IoU before the top regions are kept (0.7: the RPN's own NMS alone)")
    p.add_argument("--images", type=int, default=150, help="train images to look at")
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    world, model_dir = work / f"world-s{args.seed}", work / f"students-s{args.seed}" / "ViLD-text"
    if not (model_dir / "iter_550.pth").is_file():
        raise SystemExit(f"no ViLD-text checkpoint under {model_dir}: run tools/bench_ov.py --task detection "
                         f"--seed {args.seed} first")
    print(f"seed {args.seed}, {args.images} train images\n\n| regions | on an object | on a novel object "
          f"| novel objects covered | regions per image |\n|---|---|---|---|---|")
    for name, c in coverage(model_dir, world, args.nms, args.images):
        print(f"| {name} | {c['on_object']:.1f}% | {c['on_novel']:.1f}% | {c['novel_covered']:.1f}% | "
              f"{c['regions_per_image']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
