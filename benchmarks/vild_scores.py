"""Where ViLD's and ViLD-ensemble's novel AP50 comes from: the scores each branch gives on the val images of
a CPU-benchmark seed, from the checkpoints `tools/bench_ov.py` left in its work dir.

    python benchmarks/vild_scores.py --seed 3 [--work-dir work_dirs/bench_ov/full]

Per model and branch (text, image, ensemble): on novel ground-truth boxes, the mean score of the true
class and how often it is the top class; then the top novel-class score of background proposals (IoU <
0.3 with every ground-truth box) and of proposals on base objects (IoU >= 0.5 with a base box), and how
many of those rank above the median true-class score of the novel boxes. Novel AP50 ranks exactly
these: a novel object's box against everything else scored for its class.
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from ovclip.io import read_image, to_unit_float
from ovd import Detector
from ovd.data.coco import load_detection_annotations
from ovd.models.vild import ensemble_scores

CONFIG = "vild_teacher-rn_fpn_synthetic-cpu.py"


@torch.inference_mode()
def branch_scores(model_dir: Path, world: Path) -> dict[str, dict[str, list[float]]]:
    """Per branch: true-class scores and hits on novel boxes, top novel scores on background / base proposals."""
    det = Detector.from_config(model_dir / CONFIG, model_dir / "iter_550.pth")
    model = det.model.detector.eval()
    heads, predictor = model.roi_heads, model.predictor
    novel = ~predictor.base_mask
    records, _, _ = load_detection_annotations(world / "val.json", world / "val" / "images", det.vocabulary)
    out: dict[str, dict[str, list[float]]] = {}
    for rec in records:
        image = to_unit_float(read_image(rec.path))
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        proposals = model.rpn(images, features)[0][0]
        (h, w), (h0, w0) = images.image_sizes[0], image.shape[-2:]
        gt = torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([w / w0, h / h0] * 2)
        labels = torch.as_tensor(rec.labels)
        text_emb, image_emb, _ = heads._embed(features, [torch.cat([gt, proposals])], images.image_sizes)
        text = F.softmax(predictor.logits(text_emb), -1)[:, 1:]
        img = F.softmax(predictor.logits(image_emb)[:, 1:], -1)
        iou = box_iou(proposals, gt) if len(gt) else torch.zeros(len(proposals), 1)
        background = iou.max(1).values < 0.3
        on_base = (iou.max(1).values >= 0.5) & (~novel[labels[iou.argmax(1)]] if len(gt) else background & False)
        is_novel = novel[labels]
        for name, s in (("text", text), ("image", img), ("ensemble", ensemble_scores(text, img, predictor.base_mask))):
            o = out.setdefault(name, {"true": [], "hit": [], "background": [], "base": []})
            boxes, props = s[:len(gt)][is_novel], s[len(gt):]
            o["true"] += boxes[torch.arange(len(boxes)), labels[is_novel]].tolist()
            o["hit"] += (boxes.argmax(1) == labels[is_novel]).float().tolist()
            o["background"] += props[background][:, novel].amax(1).tolist()
            o["base"] += props[on_base][:, novel].amax(1).tolist()
    return out


def main(argv=None) -> int:
    """Print the table for ViLD and ViLD-ensemble of one seed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--work-dir", default="work_dirs/bench_ov/full", help="tools/bench_ov.py's work dir (full run)")
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    world, students = work / f"world-s{args.seed}", work / f"students-s{args.seed}"
    if not (students / "ViLD-ensemble" / "iter_550.pth").is_file():
        raise SystemExit(f"no bench checkpoints under {students}: run tools/bench_ov.py --task detection "
                         f"--seed {args.seed} first")
    print(f"seed {args.seed}\n\n| model | branch | novel boxes: true-class score | top class | background "
          f"proposals: top novel score | above median true | base-object proposals: top novel score | "
          f"above median true |\n|---|---|---|---|---|---|---|---|")
    for row in ("ViLD", "ViLD-ensemble"):
        for name, o in branch_scores(students / row, world).items():
            true, bg, base = (torch.tensor(o[k]) for k in ("true", "background", "base"))
            median = true.median()
            print(f"| {row} | {name} | {true.mean():.3f} | {100 * torch.tensor(o['hit']).mean():.0f}% | "
                  f"{bg.mean():.3f} | {100 * (bg > median).float().mean():.1f}% | {base.mean():.3f} | "
                  f"{100 * (base > median).float().mean():.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
