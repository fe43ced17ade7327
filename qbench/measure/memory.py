"""Process memory: current and peak resident set size, anonymous vs file-backed (Linux /proc).

The peak (VmHWM) can be reset by writing ``5`` to /proc/self/clear_refs (Linux >= 4.0), which lets one
worker report the peak of loading/quantizing separately from the peak during inference.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_kb() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in _STATUS.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                values[key] = int(parts[0])
    except OSError:
        pass
    return values


def snapshot_mb() -> dict[str, float]:
    """Current RSS, peak RSS (since start or last reset), anonymous and file-backed RSS, in MB."""
    status = _status_kb()
    if status:
        return {
            "rss_mb": status.get("VmRSS", 0) / 1024,
            "peak_rss_mb": status.get("VmHWM", 0) / 1024,
            "rss_anon_mb": status.get("RssAnon", 0) / 1024,
            "rss_file_mb": status.get("RssFile", 0) / 1024,
        }
    # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    return {"rss_mb": float("nan"), "peak_rss_mb": peak_mb, "rss_anon_mb": float("nan"), "rss_file_mb": float("nan")}


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
