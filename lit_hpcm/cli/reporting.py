"""How the argparse subcommands of `lit-hpcm` report a bad input: one line on stderr, exit status 2."""

from __future__ import annotations

import argparse
import sys
from functools import wraps
from typing import Callable


def reporting_errors(command: str) -> Callable:
    """Turn `ValueError` / `OSError` from a command into a one-line stderr message and exit code 2."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @wraps(run)
        def guarded(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except (ValueError, OSError) as err:
                print(f"lit-hpcm {command}: error: {err}", file=sys.stderr)
                return 2

        return guarded

    return decorate
