"""Files that several processes share: atomic writes (a reader never sees half a file, a kill -9 leaves the old
one) and file-locked caches (what the first process builds, the others wait for and load).

Used for records, suite state and baselines (JSON) and for the caches of reference models, QAT models, ONNX
exports and decoded image subsets. Free of torch: the orchestrating process imports it too.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

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


def evict_least_recent(folder: Path, max_bytes: int, pattern: str = "*", keep: Path | None = None) -> list[Path]:
    """Delete the least recently used files of ``folder`` matching ``pattern`` until they hold at most
    ``max_bytes`` (``keep`` is never deleted); returns what was deleted. Recency is the file's mtime, which a cache
    hit refreshes (:func:`touch`). A file whose lock another process holds (it is loading or writing it) is
    skipped, so eviction never pulls a file from under a reader."""
    files = sorted((f for f in folder.glob(pattern) if f.is_file() and not f.name.endswith(".lock")),
                   key=lambda f: f.stat().st_mtime)
    total = sum(f.stat().st_size for f in files)
    deleted: list[Path] = []
    for victim in files:
        if total <= max_bytes:
            break
        if keep is not None and victim == keep:
            continue
        try:
            with file_lock(victim.with_suffix("")).acquire(timeout=0):
                size = victim.stat().st_size
                victim.unlink()
        except (Timeout, FileNotFoundError):
            continue
        total -= size
        deleted.append(victim)
    return deleted


def touch(path: Path) -> None:
    """Mark a cache file as just used (its mtime), for :func:`evict_least_recent`."""
    with contextlib.suppress(OSError):  # a read-only cache still serves hits
        os.utime(path)

