"""How the tools end: a mistake the user can fix (a missing file, a bad config key, a teacher without
weights: `ovclip.errors.UserInputError`, or a file not found) is one line on stderr naming it and exit
status 2, not a traceback through mmengine; `--debug` keeps the traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

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
