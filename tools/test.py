"""Evaluate a checkpoint on the config's test set: prints the metrics table and writes metrics.json.

    python tools/test.py CONFIG [CHECKPOINT] [--vocab "cat, dog" | ov-coco | FILE] [--out results.json]

Zero-shot models (MaskCLIP) need no checkpoint.
"""
import argparse
import sys

from mmengine.config import DictAction

from ovclip.cli import add_debug_flag, run_tool
from ovclip.engine import test


def main(argv=None) -> int:
    """Parse arguments and evaluate."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file (see configs/)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (.pth); none for zero-shot models")
    p.add_argument("--vocab", help="evaluate with this vocabulary instead of the config's (names must be "
                                   "categories of the test annotations)")
    p.add_argument("--out", help="also write the detections as a COCO results json here (segmentation: the "
                                 "predicted label PNGs into this folder)")
    p.add_argument("--work-dir", help="where metrics.json and logs go (default: work_dirs/CONFIG_NAME)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, help="override config keys: key=value")
    p.add_argument("--allow-partial", action="store_true",
                   help="load a checkpoint that does not fully fit the config (warns, names the keys); refused otherwise")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    add_debug_flag(p)
    args = p.parse_args(argv)
    test(args.config, args.checkpoint, vocabulary=args.vocab, out=args.out, work_dir=args.work_dir,
         cfg_options=args.cfg_options, launcher=args.launcher, allow_partial=args.allow_partial)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
