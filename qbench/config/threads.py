"""Thread settings of a measuring process, resolved from the config (the orchestrator sizes a worker's
OpenMP/MKL pools with them; the worker sets torch's own pools, :mod:`qbench.worker.threads`)."""

from __future__ import annotations

from typing import Any

import psutil

# pid of the orchestrator that spawned a worker, which the worker must not outlive (qbench.worker)
PARENT_PID_ENV = "QBENCH_PARENT_PID"
# modules (comma-separated) a fork server imports besides the worker's own, because its cells import them anyway
PRELOAD_ENV = "QBENCH_FORKSERVER_PRELOAD"


def resolve_threads(cfg: Any) -> tuple[int, int]:
    """(intra-op, inter-op) thread counts: configured values, physical cores when intra_op is null."""
    intra = cfg.measure.threads.intra_op or psutil.cpu_count(logical=False) or 1
    return int(intra), int(cfg.measure.threads.inter_op)


def worker_env(cfg: Any, base: dict[str, str]) -> dict[str, str]:
    """Environment of a spawned worker: OpenMP/MKL pools sized like torch's intra-op pool."""
    intra, _ = resolve_threads(cfg)
    env = dict(base)
    env.update(OMP_NUM_THREADS=str(intra), MKL_NUM_THREADS=str(intra), OPENBLAS_NUM_THREADS=str(intra),
               PYTHONUNBUFFERED="1")
    return env
