"""What the subcommands built on argparse share: usage errors reported as one line (exit 2, never a traceback)
and the default MLflow store."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from qbench.track.uri import DEFAULT_URI

DEFAULT_EXPERIMENT = "qbench"
__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_URI", "OneLineParser", "UsageError", "fail", "parse_cell_args"]


class UsageError(Exception):
    """Bad input or nothing to work on: one line on stderr, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises a usage error (printed in one line by the command) instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def fail(command: str, message: str) -> int:
    """Print ``qbench COMMAND: message`` on stderr; the exit status of a usage error."""
    print(f"qbench {command}: {message}", file=sys.stderr)
    return 2


def parse_cell_args(parser: argparse.ArgumentParser, args: list[str], positive: tuple[str, ...]
                    ) -> tuple[Any, list[str]]:
    """The options and Hydra overrides of a one-cell command (analyze, tune); UsageError for an unknown flag or an
    option of ``positive`` that is not > 0."""
    ns, overrides = parser.parse_known_args(args)
    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        raise UsageError(f"unrecognized arguments: {' '.join(flags)}")
    for name in positive:
        if getattr(ns, name) is not None and getattr(ns, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')}={getattr(ns, name)}: must be > 0")
    return ns, overrides
