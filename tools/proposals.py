"""Dump a trained detector's class-agnostic RPN proposals as COCO results json (resumable).

    python tools/proposals.py CONFIG CHECKPOINT --out proposals.json [--split train] [--max-per-image 300] [--refine N]

Then embed them with the teacher (tools/precompute.py with dataset.proposals=proposals.json), or label them
with it (tools/pseudo_boxes.py --proposals proposals.json; VL-PLM refines its proposals with --refine 10).
"""
import argparse
import json
import logging
import sys

from ovclip.cli import add_debug_flag, run_tool
from ovd.proposals import dump_proposals


def main(argv=None) -> int:
    """Parse arguments and dump the proposals."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="proposals json (COCO results format)")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="which dataset of the config")
    p.add_argument("--max-per-image", type=int, default=300)
    p.add_argument("--refine", type=int, default=0, help="apply the RoI head's box regression this many times "
                                                             "(VL-PLM's refinement: 10)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    add_debug_flag(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stats = dump_proposals(args.config, args.checkpoint, args.out, args.split, args.max_per_image, args.device,
                           progress=not args.no_progress, refine=args.refine)
    print(json.dumps({**stats, "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
