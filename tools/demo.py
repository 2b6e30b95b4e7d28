"""Find free-text classes in images: detection configs write boxes drawn on each image, segmentation
configs a coloured overlay with a legend; plus a json per image.

    python tools/demo.py CONFIG CHECKPOINT IMAGE... --vocab "cat, dog, sofa|couch" --out-dir D [--score-thr 0.3]
    python tools/demo.py configs/maskclip/maskclip_synthetic-cpu.py none IMAGE --vocab "star, circle" --out-dir D

IMAGE may be a folder: the images directly in it (not in its subfolders; {suffixes}),
sorted by name. Outputs are named by the image's stem; inputs sharing a stem get _1, _2, ...
in the order given, and each json records its source path. Pictures smaller than 512 pixels on their short
side are enlarged by a whole factor so the legend beside them can be read; json boxes stay in the image's
own pixels. A model with trainable weights needs its checkpoint: 'none' is for zero-shot models (MaskCLIP).
"""
import argparse
import sys

from mmengine.config import DictAction

from ovclip.cli import add_debug_flag, run_tool
from ovclip.engine import config_scope
from ovclip.io import IMAGE_SUFFIXES


def main(argv=None) -> int:
    """Parse arguments and run the detection or segmentation demo, as the config says."""
    p = argparse.ArgumentParser(description=__doc__.format(suffixes=" ".join(IMAGE_SUFFIXES)),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file (see configs/)")
    p.add_argument("checkpoint", help="checkpoint file (.pth), or 'none' for zero-shot models (MaskCLIP)")
    p.add_argument("images", nargs="+", help="image files or folders of images (not searched recursively)")
    p.add_argument("--vocab", required=True, help="classes to find: 'cat, dog, sofa|couch', a builtin name or a file")
    p.add_argument("--out-dir", required=True, help="folder for the annotated images and json files")
    p.add_argument("--score-thr", type=float, default=0.3, help="detection: lowest score drawn and listed")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="override config keys: key=value (e.g. model.inference_mode=image)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    checkpoint = None if args.checkpoint.lower() == "none" else args.checkpoint
    if config_scope(args.config) == "ovseg":
        from ovseg.demo import run_segmentation_demo
        failed = run_segmentation_demo(args.config, checkpoint, args.images, args.vocab, args.out_dir,
                                       args.device, args.cfg_options)
    else:
        from ovd.demo import run_demo
        failed = run_demo(args.config, checkpoint, args.images, args.vocab, args.out_dir, args.score_thr,
                          args.device, args.cfg_options)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
