"""Label a dataset's candidate boxes with the teacher: novel-class box pseudo-labels (VL-PLM's recipe),
written as a COCO-format annotation file for a detector's `pseudo_annotations=`.

    python tools/proposals.py DET_CONFIG DET_CHECKPOINT --out proposals.json [--refine 10]  # a base-trained RPN
    python tools/pseudo_boxes.py CONFIG --proposals proposals.json --out pseudo.json [--cfg-options k=v ...]
    torchrun --nproc_per_node N tools/pseudo_boxes.py CONFIG --proposals P.json --out pseudo.json

CONFIG: configs/pseudo_boxes/ (teacher, dataset, vocabulary and the classes to label, the thresholds).
Rerun the same command to resume: finished images are skipped. Exit status: 0 every image is labelled; 3
some images could not be read (named in the log; the file holds the others, and a rerun does the rest); 2 a
mistake to fix (a missing file, an unknown config key, a malformed proposals file), with one 'error:' line.
"""
import argparse
import json
import logging
import sys

from mmengine.config import DictAction

from ovclip.cli import Ranks, add_debug_flag, run_tool, tool_config
from ovclip.pseudo_boxes_job import PseudoBoxJob

SOME_IMAGES_FAILED = 3


def main(argv=None) -> int:
    """Parse arguments, pseudo-label this rank's images, and (rank 0) write the annotation file."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="pseudo-label config file (see configs/pseudo_boxes/)")
    p.add_argument("--out", required=True, help="the COCO-format pseudo-annotation file to write")
    p.add_argument("--proposals", help="class-agnostic proposals with objectness (COCO results json, e.g. from "
                                       "tools/proposals.py); overrides dataset.proposals")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, help="override config keys: key=value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sections = tool_config(args.config, args.cfg_options,
                           {"dataset.proposals": args.proposals} if args.proposals else None)
    with Ranks() as ranks:
        job = PseudoBoxJob(sections)
        stats = job.run(args.out, rank=ranks.rank, world_size=ranks.world, progress=not args.no_progress)
        bad = ranks.total(stats["bad_images"])  # also the barrier: the file is written once every rank has finished
        summary = {"rank": ranks.rank, **stats, "complete": not bad}
        if ranks.rank == 0:
            written = job.write(args.out, complete=not bad)
            summary.update(out=args.out, file_images=written["images"], file_pseudo_labels=written["pseudo_labels"],
                           per_class=written["per_class"])
        print(json.dumps(summary))
        rank = ranks.rank
    if bad:
        if rank == 0:
            print(f"warning: {bad} image{'s' if bad > 1 else ''} could not be read and have no "
                  f"pseudo-labels in {args.out} (the first are named in the warnings above). Fix those image "
                  f"files and rerun the same command: only the missing images are labelled", file=sys.stderr)
        return SOME_IMAGES_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
