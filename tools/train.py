"""Train a detector from a config.

    python tools/train.py CONFIG [--work-dir D] [--resume [CKPT]] [--tensorboard] [--cfg-options k=v ...]
    torchrun --nproc_per_node N tools/train.py CONFIG --launcher pytorch
"""
import argparse
import sys

from mmengine.config import DictAction

from ovclip.cli import add_debug_flag, run_tool
from ovclip.engine import train


def main(argv=None) -> int:
    """Parse arguments and train."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="config file (see configs/)")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default: work_dirs/CONFIG_NAME)")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="continue from the work dir's latest checkpoint, or from the given one")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={}, help="override config keys: key=value")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to TensorBoard (pip install -e '.[tensorboard]'; tensorboard --logdir WORK_DIR)")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none",
                   help="'pytorch' under torchrun for several processes")
    p.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    add_debug_flag(p)
    args = p.parse_args(argv)
    train(args.config, work_dir=args.work_dir, resume=args.resume, cfg_options=args.cfg_options,
          launcher=args.launcher, tensorboard=args.tensorboard)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
