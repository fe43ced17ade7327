"""Files that several processes share: atomic writes (a reader never sees half a file, a kill -9 leaves the old
one) and file-locked caches (what the first process builds, the others wait for and load).

Used for records, suite state and baselines (JSON) and for the caches of reference models, QAT models, ONNX
exports and decoded image subsets. Free of torch: the orchestrating process imports it too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

T = TypeVar("T")


def file_lock(path: Path) -> FileLock:
    """The inter-process lock that guards ``path`` (a file or a folder): ``<path>.lock`` next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def write_atomic(path: Path, write: Callable[[Path], Any], suffix: str = "") -> Path:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then rename it into place. ``suffix`` ends the
    temporary name, for writers that go by it (the ONNX exporter)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that a reader never sees a half-written file."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def cached(path: Path, build: Callable[[], T], save: Callable[[T, Path], Any], load: Callable[[Path], T],
           suffix: str = "") -> tuple[T, bool]:
    """``load(path)`` when the file exists, else ``build()`` it and ``save`` it atomically (``suffix``: see
    :func:`write_atomic`); returns the value and whether it came from the cache. Under the lock of ``path``
    (without its suffix), so that concurrent processes build it once."""
    with file_lock(path.with_suffix("")):
        if path.is_file():
            return load(path), True
        value = build()
        write_atomic(path, lambda tmp: save(value, tmp), suffix)
    return value, False
