"""Thread pools of the measuring process: set explicitly (from :mod:`qbench.config.threads`) and recorded."""

from __future__ import annotations

import contextlib

from qbench.config.threads import resolve_threads

__all__ = ["apply_threads", "resolve_threads"]


def apply_threads(intra: int, inter: int) -> None:
    """Set torch's pools in this process (inter-op can be set once per process only)."""
    import torch

    torch.set_num_threads(intra)
    with contextlib.suppress(RuntimeError):  # only settable once per process
        torch.set_num_interop_threads(inter)
