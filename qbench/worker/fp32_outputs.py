"""The FP32 reference's outputs on the evaluation split, computed by the first cell of a (model, task, host) and
replayed by the next ones.

Every quantized cell compares its outputs with the FP32 model's on the same inputs (fidelity, Δ metric), so a
suite of N schemes would run the same FP32 evaluation N times: for a sentence encoder scored one text per call
that is ~6 s a cell. The FP32 model's outputs do not depend on the cell's scheme or backend, only on the model, the
inputs, the torch build, the CPU and the thread count, which make the key; each call's inputs are also checked by
digest when replayed, so a change in data or batching recomputes rather than replaying wrong outputs.

Outputs larger than :data:`MAX_BYTES` (a language model's logits: 16 windows x 256 tokens x 49152 vocabulary =
0.8 GB) are not cached. A cell tags ``eval.fp32_outputs=replayed|computed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from qbench.config import paths
from qbench.data.batching import NamedBatch, Outputs
from qbench.storage import file_lock, write_atomic

MAX_BYTES = 64 * 2**20
FORMAT_VERSION = 1


def cache_path(key: dict[str, Any]) -> Path:
    """Where the outputs of ``key`` (model, task, data, host, threads: JSON-serialisable) are kept."""
    blob = json.dumps({**key, "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return paths.cache_dir() / "fp32_outputs" / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.pt"


def _digest(inputs: NamedBatch) -> str:
    h = hashlib.sha256()
    for name, tensor in inputs.items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class ReplayedOutputs:
    """A model's ``outputs(inputs)``, replayed call by call from ``path`` while each call's inputs match what
    was recorded there, computed otherwise; :meth:`save` writes what this run computed when the file was
    missing or stale."""

    def __init__(self, compute: Callable[[NamedBatch], Outputs], path: Path) -> None:
        self.compute, self.path = compute, path
        self.saved: list[tuple[str, Outputs]] = []
        if path.is_file():
            try:
                self.saved = torch.load(path, weights_only=True)
            except (OSError, RuntimeError, EOFError):  # a damaged file is recomputed, never trusted
                self.saved = []
        self.calls: list[tuple[str, Outputs]] = []
        self.replayed = 0
        self.nbytes = 0  # of the outputs held; beyond MAX_BYTES none are held (nor saved)

    def __call__(self, inputs: NamedBatch) -> Outputs:
        digest = _digest(inputs)
        i = len(self.calls)
        if i < len(self.saved) and self.saved[i][0] == digest:
            outputs = self.saved[i][1]
            self.replayed += 1
        else:
            outputs = self.compute(inputs)
        self.nbytes += sum(t.numel() * t.element_size() for t in outputs.values())
        self.calls.append((digest, outputs if self.nbytes <= MAX_BYTES else {}))
        return outputs

    @property
    def all_replayed(self) -> bool:
        return bool(self.calls) and self.replayed == len(self.calls) == len(self.saved)

    def save(self) -> None:
        """Keep this run's outputs for the next cell (not when all were replayed, or when they are too large)."""
        if not self.calls or self.all_replayed or self.nbytes > MAX_BYTES:
            return
        with file_lock(self.path.with_suffix("")):
            write_atomic(self.path, lambda tmp: torch.save(self.calls, tmp))
