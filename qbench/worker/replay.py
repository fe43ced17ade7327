"""Reference outputs on the evaluation split, computed by the first cell that needs them and replayed by the next.

Every quantized cell compares its outputs with two references on the same inputs: the FP32 model's (fidelity,
Δ metric) and, on a real backend, the simulated model's of the same scheme (the deployment gap). Neither depends
on the cell's backend, so a suite that deploys N schemes to two backends would evaluate each reference again in
every cell (a sentence encoder scored one text per call: ~6 s a model; SmolLM2 on 16 x 256 tokens: ~6 s).

- FP32: the key is the model, the inputs, the torch build, the CPU and the thread count.
- The simulation: the same plus the scheme as simulated (its config, the quantized layers, the ISA it emulates,
  the simulation code's version). It is recorded by the cell whose deployed model *is* the simulation (the
  ``torch`` backend, kernel ``simulated``) and replayed by the real-backend cells of that scheme.

Each call's inputs are checked by digest when replayed, so a change in data or batching recomputes rather than
replaying wrong outputs. A task may keep a compact form of the outputs (:meth:`qbench.tasks.Task.replay_form`:
a language model's per-token log-probability and argmax instead of its logits); outputs larger than
:data:`MAX_BYTES` are not kept. A cell tags ``eval.fp32_outputs`` / ``eval.simulated_outputs`` =
``replayed|computed``.
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

# a language model's FP32 logits (16 windows x 255 tokens x 49152 vocabulary, float32) are 0.8 GB: kept, since
# the KL to FP32 needs every probability; one file per model, host and thread count
MAX_BYTES = 1 << 30
FORMAT_VERSION = 2


def cache_path(key: dict[str, Any]) -> Path:
    """Where the outputs of ``key`` (model, task, data, host, threads; the scheme for a simulation:
    JSON-serialisable) are kept."""
    blob = json.dumps({**key, "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return paths.cache_dir() / "reference_outputs" / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.pt"


def _digest(inputs: NamedBatch) -> str:
    h = hashlib.sha256()
    for name, tensor in inputs.items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


Reduce = Callable[[NamedBatch, Outputs], Outputs]


class ReplayedOutputs:
    """A model's ``outputs(inputs)``, replayed call by call from ``path`` while each call's inputs match what
    was recorded there, computed otherwise; :meth:`save` writes what this run computed when the file was
    missing or stale. ``reduce`` is the form kept (and returned); ``record_only`` computes every call and
    returns the full outputs, keeping their reduced form for the cells that replay them."""

    def __init__(self, compute: Callable[[NamedBatch], Outputs], path: Path, reduce: Reduce | None = None,
                 record_only: bool = False) -> None:
        self.compute, self.path, self.reduce, self.record_only = compute, path, reduce, record_only
        self.saved: list[tuple[str, Outputs]] = []
        if path.is_file() and not record_only:
            try:  # mapped, not read: a language model's logits are read only as far as they are replayed
                self.saved = torch.load(path, weights_only=True, mmap=True)
            except (OSError, RuntimeError, EOFError):  # a damaged file is recomputed, never trusted
                self.saved = []
        self.calls: list[tuple[str, Outputs]] = []
        self.replayed = 0
        self.nbytes = 0  # of the outputs held; beyond MAX_BYTES none are held (nor saved)

    def __call__(self, inputs: NamedBatch) -> Outputs:
        digest = _digest(inputs)
        i = len(self.calls)
        if i < len(self.saved) and self.saved[i][0] == digest:
            kept = returned = self.saved[i][1]
            self.replayed += 1
        else:
            returned = self.compute(inputs)
            kept = self.reduce(inputs, returned) if self.reduce else returned
            if not self.record_only:
                returned = kept
        self.nbytes += sum(t.numel() * t.element_size() for t in kept.values())
        self.calls.append((digest, kept if self.nbytes <= MAX_BYTES else {}))
        return returned

    @property
    def all_replayed(self) -> bool:
        return bool(self.calls) and self.replayed == len(self.calls) == len(self.saved)

    def save(self) -> None:
        """Keep this run's outputs for the next cell (not when all were replayed, or when they are too large)."""
        if not self.calls or self.all_replayed or self.nbytes > MAX_BYTES:
            return
        self.saved = []  # drop the mapping of the file about to be replaced
        with file_lock(self.path.with_suffix("")):
            write_atomic(self.path, lambda tmp: torch.save(self.calls, tmp))
