"""Run the CLIP teacher over a dataset's boxes and write region embeddings to a feature store.

    python tools/precompute.py CONFIG --out DIR [--cfg-options teacher.spec=ViT-B-32/openai ...]
    torchrun --nproc_per_node N tools/precompute.py CONFIG --out DIR     # N writers, one shard set each
"""
import argparse
import json
import logging
import os
import sys

import torch.distributed as dist
from mmengine.config import Config, DictAction

from ovclip.precompute import run_precompute
from ovclip.store import FeatureStore


def main(argv=None) -> int:
    """Parse arguments and run the precompute job for this rank."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="precompute config file (see configs/precompute/)")
    p.add_argument("--out", required=True, help="feature store folder (created, or resumed if it exists)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, help="override config keys: key=value")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("gloo")
    stats = run_precompute(cfg.to_dict(), args.out, rank=rank, world_size=world, progress=not args.no_progress)
    if world > 1:
        dist.barrier()  # the index is built once every rank has flushed its shards
    if rank == 0:
        store = FeatureStore(args.out, verify=False)
        print(json.dumps({"rank": rank, **stats, "store_images": len(store), "store": args.out}))
    else:
        print(json.dumps({"rank": rank, **stats}))
    if world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
