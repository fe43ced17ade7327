"""Where qbench finds its configs and where it writes results and caches.

``conf/`` and ``suites/`` live at the top of the repository (the layout users read and edit). A source
checkout (editable install, ``PYTHONPATH``) reads them there, so edits take effect without reinstalling; a
regular install reads the copies that the build step (``setup.py``) puts into ``qbench/_resources/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# conf/ and suites/ copied into the package when a wheel is built (absent from a source checkout)
RESOURCES_DIR = PACKAGE_DIR / "_resources"


def _checkout_dir() -> Path | None:
    """The repository the package is imported from, or None for a regular install."""
    if (RESOURCES_DIR / "conf").is_dir():
        return None
    root = PACKAGE_DIR.parent
    return root if (root / "conf" / "config.yaml").is_file() and (root / "pyproject.toml").is_file() else None


# the source checkout (None when qbench is installed from a wheel)
PROJECT_DIR: Path | None = _checkout_dir()
_DATA_DIR = PROJECT_DIR or RESOURCES_DIR
CONF_DIR = _DATA_DIR / "conf"
SUITES_DIR = _DATA_DIR / "suites"
CONFIG_GROUPS = ("task", "model", "dataset", "quant", "backend", "measure", "tracking", "workload")


def build_info() -> dict[str, str]:
    """What the build step recorded about the source a regular install was built from (``git_sha``)."""
    try:
        return json.loads((RESOURCES_DIR / "build.json").read_text())
    except (OSError, ValueError):
        return {}


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
