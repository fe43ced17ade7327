"""Where qbench finds its configs and where it writes results and caches."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = PACKAGE_DIR.parent
CONF_DIR = PROJECT_DIR / "conf"
SUITES_DIR = PROJECT_DIR / "suites"
CONFIG_GROUPS = ("model", "dataset", "quant", "backend", "measure", "tracking")


def cache_dir() -> Path:
    """Cache for trained reference models and exported artifacts (``QBENCH_CACHE`` overrides it)."""
    env = os.environ.get("QBENCH_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qbench"


def suite_dirs() -> list[Path]:
    """Directories searched for ``suites/NAME.yaml``: the user's ``./suites`` first, then qbench's own."""
    dirs = []
    local = Path.cwd() / "suites"
    if local.is_dir() and local.resolve() != SUITES_DIR.resolve():
        dirs.append(local)
    if SUITES_DIR.is_dir():
        dirs.append(SUITES_DIR)
    return dirs
