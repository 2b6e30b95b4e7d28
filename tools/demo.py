"""Find free-text classes in images: detection configs write boxes drawn on each image, segmentation
configs a coloured overlay with a legend; plus a json per image.

    python tools/demo.py CONFIG CHECKPOINT IMAGE... --vocab "cat, dog, sofa|couch" --out-dir D [--score-thr 0.3]
    python tools/demo.py configs/maskclip/maskclip_synthetic-cpu.py none IMAGE --vocab "star, circle" --out-dir D
    python tools/demo.py --onnx EXPORTED_DIR IMAGE... --vocab "cat, dog" --out-dir D   (tools/export.py's folder)

IMAGE may be a folder: the images directly in it (not in its subfolders; {suffixes}),
sorted by name. Outputs are named by the image's stem; inputs sharing a stem get _1, _2, ...
in the order given, and each json records its source path. Pictures smaller than 512 pixels on their short
side are enlarged by a whole factor so the legend beside them can be read; json boxes stay in the image's
own pixels. A model with trainable weights needs its checkpoint: 'none' is for zero-shot models (MaskCLIP).
With --onnx the model is an exported folder, run by onnxruntime (`ovclip.deploy`): no config or checkpoint.
"""
import argparse
import sys

from mmengine.config import DictAction

from ovclip.cli import add_debug_flag, run_tool
from ovclip.engine import config_scope
from ovclip.io import IMAGE_SUFFIXES


USAGE = """%(prog)s CONFIG CHECKPOINT IMAGE... --vocab VOCAB --out-dir D [options]
       %(prog)s --onnx DIR IMAGE... --vocab VOCAB --out-dir D [options]"""


def main(argv=None) -> int:
    """Parse arguments and run the detection or segmentation demo, as the config says."""
    p = argparse.ArgumentParser(description=__doc__.format(suffixes=" ".join(IMAGE_SUFFIXES)), usage=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="config file (see configs/), checkpoint file (.pth, or 'none' for zero-shot models such as "
                        "MaskCLIP), then image files or folders of images (not searched recursively); with --onnx, "
                        "images only")
    p.add_argument("--onnx", metavar="DIR", help="run an exported model folder (tools/export.py) with onnxruntime")
    p.add_argument("--vocab", required=True, help="classes to find: 'cat, dog, sofa|couch', a builtin name or a file")
    p.add_argument("--out-dir", required=True, help="folder for the annotated images and json files")
    p.add_argument("--score-thr", type=float, default=0.3, help="detection: lowest score drawn and listed")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="override config keys: key=value (e.g. model.inference_mode=image)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if args.onnx:
        return run_exported(args)
    if len(args.inputs) < 3:
        p.error("give CONFIG CHECKPOINT IMAGE... (or --onnx DIR IMAGE...)")
    config, checkpoint, images = args.inputs[0], args.inputs[1], args.inputs[2:]
    checkpoint = None if checkpoint.lower() == "none" else checkpoint
    if config_scope(config) == "ovseg":
        from ovseg.demo import run_segmentation_demo
        failed = run_segmentation_demo(config, checkpoint, images, args.vocab, args.out_dir, args.device,
                                       args.cfg_options)
    else:
        from ovd.demo import run_demo
        failed = run_demo(config, checkpoint, images, args.vocab, args.out_dir, args.score_thr, args.device,
                          args.cfg_options)
    return 1 if failed else 0


def run_exported(args: argparse.Namespace) -> int:
    """The demo of an exported folder: detections or segmentation, as its manifest says."""
    from ovclip.deploy import OnnxDetector, load_exported
    model = load_exported(args.onnx)
    if isinstance(model, OnnxDetector):
        from ovd.demo import detection_demo
        failed = detection_demo(model, args.inputs, args.vocab, args.out_dir, args.score_thr)
    else:
        from ovseg.demo import segmentation_demo
        failed = segmentation_demo(model, args.inputs, args.vocab, args.out_dir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
