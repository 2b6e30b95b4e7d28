"""Detect free-text classes in images: writes an annotated image and a json of detections per input.

    python tools/demo.py CONFIG CHECKPOINT IMAGE... --vocab "cat, dog, sofa|couch" --out-dir D [--score-thr 0.3]
"""
import argparse
import sys

from ovd.demo import run_demo


def main(argv=None) -> int:
    """Parse arguments and run the demo."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file (see configs/)")
    p.add_argument("checkpoint", help="checkpoint file (.pth)")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--vocab", required=True, help="classes to find: 'cat, dog, sofa|couch', a builtin name or a file")
    p.add_argument("--out-dir", required=True, help="folder for the annotated images and json files")
    p.add_argument("--score-thr", type=float, default=0.3, help="lowest score drawn and listed")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = p.parse_args(argv)
    failed = run_demo(args.config, args.checkpoint, args.images, args.vocab, args.out_dir, args.score_thr,
                      args.device)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
