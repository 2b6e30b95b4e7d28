"""Export a trained model to a folder that runs with onnxruntime alone, its vocabulary an input.

    python tools/export.py CONFIG CHECKPOINT --out DIR [--format onnx]

DIR gets model.onnx (image + the vocabulary's text embeddings -> detections, or a window's class scores),
text_encoder.onnx and tokenizer.json (the teacher's text side, so that a new vocabulary is embedded without
torch), resize.onnx and labels.onnx (segmenters) and manifest.json. Run it with
`ovclip.deploy.load_exported(DIR).predict(image, "cat, dog")` or `tools/demo.py --onnx DIR` after
`pip install -e ".[deploy]"`. Detectors (ViLD in any inference mode, with templates or DetPro's learned
prompts) and segmenters (MaskCLIP: checkpoint 'none'; MaskCLIP+; the mask-proposal segmenter without its
teacher ensemble) export; the others are refused with the reason.
"""
import argparse
import sys

from mmengine.config import DictAction

from ovclip.cli import add_debug_flag, run_tool
from ovclip.engine import config_scope


def main(argv=None) -> int:
    """Parse arguments and export."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file (see configs/)")
    p.add_argument("checkpoint", help="checkpoint file (.pth) trained from this config, or 'none' for MaskCLIP")
    p.add_argument("--out", required=True, help="folder to write the exported model into")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                   help="override config keys: key=value (e.g. model.inference_mode=text)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    checkpoint = None if args.checkpoint.lower() == "none" else args.checkpoint
    if config_scope(args.config) == "ovseg":
        from ovseg.export import export_config
    else:
        from ovd.export import export_config
    manifest = export_config(args.config, checkpoint, args.out, args.cfg_options)
    print(f"exported to {manifest.parent} (manifest: {manifest})")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
