"""What the subcommands built on argparse share: usage errors reported as one line (exit 2, never a traceback)
and the default MLflow store."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from qbench.track.uri import DEFAULT_URI

DEFAULT_EXPERIMENT = "qbench"
__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_URI", "OneLineParser", "UsageError", "fail"]


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
