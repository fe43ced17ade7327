"""Thread settings of a measuring process: configured explicitly and recorded with every result."""

from __future__ import annotations

import contextlib

import psutil

# pid of the orchestrator that spawned a worker, which the worker must not outlive (qbench.worker)
PARENT_PID_ENV = "QBENCH_PARENT_PID"


def resolve_threads(cfg) -> tuple[int, int]:
    """(intra-op, inter-op) thread counts: configured values, physical cores when intra_op is null."""
    intra = cfg.measure.threads.intra_op or psutil.cpu_count(logical=False) or 1
    return int(intra), int(cfg.measure.threads.inter_op)


def worker_env(cfg, base: dict[str, str]) -> dict[str, str]:
    """Environment of a spawned worker: OpenMP/MKL pools sized like torch's intra-op pool."""
    intra, _ = resolve_threads(cfg)
    env = dict(base)
    env.update(OMP_NUM_THREADS=str(intra), MKL_NUM_THREADS=str(intra), OPENBLAS_NUM_THREADS=str(intra),
               PYTHONUNBUFFERED="1")
    return env


def apply_threads(intra: int, inter: int) -> None:
    """Set torch's pools in this process (inter-op can be set once per process only)."""
    import torch

    torch.set_num_threads(intra)
    with contextlib.suppress(RuntimeError):  # only settable once per process
        torch.set_num_interop_threads(inter)
