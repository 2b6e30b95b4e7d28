"""What the tools share: how they end (a mistake the user can fix, such as a missing file, a bad config key
or a teacher without weights: `ovclip.errors.UserInputError`, or a file not found, is one line on stderr
naming it and exit status 2, not a traceback through mmengine; `--debug` keeps the traceback), how a
sectioned tool config is read, and how the ranks of a torchrun launch share a dataset job."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Optional, Sequence

from .errors import UserInputError

DEBUG_FLAG = "--debug"
USER_ERROR_STATUS = 2


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Declare --debug in a tool's parser (`run_tool` reads it), so that --help lists it."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")


def run_tool(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's `main(argv)`; returns its exit status, or USER_ERROR_STATUS after printing
    'error: <message>' for a user's mistake (re-raised as is with --debug)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(args)
    except (UserInputError, FileNotFoundError) as e:
        if DEBUG_FLAG in args:
            raise
        print(f"error: {e}\n(run with {DEBUG_FLAG} for the traceback)", file=sys.stderr, flush=True)
        return USER_ERROR_STATUS


def tool_config(path: str, cfg_options: dict, overrides: Optional[dict] = None) -> dict[str, Any]:
    """A tool's sectioned config (tools/precompute.py, tools/pseudo_boxes.py) as a plain dict: `cfg_options`
    applied (data_root=... moves every path built from it), then `overrides`; the *_root variables dropped."""
    from mmengine.config import Config

    from .engine.runner import ROOT_SUFFIX, reroot
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(reroot(cfg, cfg_options))
    if overrides:
        cfg.merge_from_dict(overrides)
    return {k: v for k, v in cfg.to_dict().items() if not k.endswith(ROOT_SUFFIX)}


class Ranks:
    """This process's place in a torchrun launch (rank 0 of 1 without one), joining the gloo process group
    when there are several. Use as a context manager; `total` sums a count over the ranks, and is the
    barrier after which rank 0 may gather what every rank wrote."""

    def __init__(self):
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

    def __enter__(self) -> "Ranks":
        if self.world > 1:
            import torch.distributed as dist
            dist.init_process_group("gloo")
        return self

    def total(self, count: int) -> int:
        """`count` summed over every rank (after all of them have got here)."""
        if self.world == 1:
            return int(count)
        import torch
        import torch.distributed as dist
        value = torch.tensor([int(count)])
        dist.all_reduce(value)
        return int(value)

    def __exit__(self, *exc) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()
