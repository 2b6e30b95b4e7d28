"""Run the CLIP teacher over a dataset's boxes and write region embeddings to a feature store.

    python tools/precompute.py CONFIG --out DIR [--cfg-options teacher.spec=ViT-B-32/openai data_root=/coco/ ...]
    torchrun --nproc_per_node N tools/precompute.py CONFIG --out DIR     # N writers, one shard set each

Rerun the same command to resume: stored images are skipped, damaged shards are set aside and redone.
Exit status: 0 every image is stored; 3 some images could not be read (named in the log, not in the
store; the others are); 2 a mistake to fix (a missing file or folder, an unknown config key, no image
readable at all), with one 'error:' line.
"""
import argparse
import json
import logging
import sys

from mmengine.config import DictAction

from ovclip.cli import Ranks, add_debug_flag, run_tool, tool_config
from ovclip.precompute import run_precompute
from ovclip.store import FeatureStore

SOME_IMAGES_FAILED = 3


def main(argv=None) -> int:
    """Parse arguments and run the precompute job for this rank."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="precompute config file (see configs/precompute/)")
    p.add_argument("--out", required=True, help="feature store folder (created, or resumed if it exists)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, help="override config keys: key=value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sections = tool_config(args.config, args.cfg_options)
    with Ranks() as ranks:
        stats = run_precompute(sections, args.out, rank=ranks.rank, world_size=ranks.world,
                               progress=not args.no_progress)
        bad = ranks.total(stats["bad_images"])  # also the barrier: the index is built once every rank has flushed
        summary = {"rank": ranks.rank, **stats, "complete": not bad}
        if ranks.rank == 0:
            summary.update(store_images=len(FeatureStore(args.out, verify=False)), store=args.out)
        print(json.dumps(summary))
        rank = ranks.rank
    if bad:
        if rank == 0:
            print(f"warning: {bad} image{'s' if bad > 1 else ''} could not be read and are not in the "
                  f"store {args.out} (the first are named in the warnings above); the other images are stored. Fix "
                  f"those image files and rerun the same command: only the missing images are computed",
                  file=sys.stderr)
        return SOME_IMAGES_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
