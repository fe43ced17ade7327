"""One preflight for every way a cell starts (``qbench run``, a suite's plan): can its model and data be loaded
here, and can its backend run its scheme natively — answered before any work, each answer one line.

The orchestrator never imports torch. Rules that need no file are checked here; a cell that names files of its
own (a torchvision model, a checkpoint, an ONNX file, an image folder, CIFAR-10/MNIST) is checked by a spawned
``python -m qbench.worker --check`` — one process for all such cells of a suite, none in the default
(reference model on digits) path.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from qbench import config as qconfig

# datasets with a training split (what reference models are trained on and QAT fine-tunes on)
WITH_TRAINING_SPLIT = ("digits", "cifar10", "mnist")
# what only a process that imports torch can check (weights, checkpoints, files' declared inputs)
_FILE_SOURCES = ("torchvision", "checkpoint", "onnx", "hf")
_FILE_DATASETS = ("imagefolder", "cifar10", "mnist", "lee_corpus", "word_similarity")


class PreflightError(RuntimeError):
    """The check process itself failed (not a verdict on a cell)."""


def training_split_reason(cfg: qconfig.QBenchConfig) -> str | None:
    """Why the cell needs a training split its dataset lacks (reference models train on it, QAT fine-tunes)."""
    name = cfg.dataset.name
    if cfg.model.source == "reference" and name not in WITH_TRAINING_SPLIT:
        return (f"model={cfg.model.name} is a reference model that qbench trains on the dataset's training split, "
                f"and dataset.name={name} has none: use model=tv, checkpoint or onnx")
    if cfg.quant.method == "qat" and name not in WITH_TRAINING_SPLIT:
        return f"quant.method=qat fine-tunes on a training split, and dataset.name={name} has none"
    return None


def needs_file_check(cfg: qconfig.QBenchConfig) -> bool:
    return cfg.model.source in _FILE_SOURCES or cfg.dataset.name in _FILE_DATASETS


def unavailable_reasons(cfgs: list[qconfig.QBenchConfig]) -> list[str | None]:
    """For each cell, why its model or data cannot be loaded here (missing file, no weights, a checkpoint that
    does not fit, inputs an image dataset cannot feed), or None."""
    reasons = [training_split_reason(cfg) for cfg in cfgs]
    pending: dict[str, list[int]] = {}
    payloads: dict[str, dict] = {}
    for i, cfg in enumerate(cfgs):
        if reasons[i] is None and needs_file_check(cfg):
            payload = {"model": dataclasses.asdict(cfg.model), "dataset": dataclasses.asdict(cfg.dataset)}
            key = json.dumps(payload, sort_keys=True, default=str)
            pending.setdefault(key, []).append(i)
            payloads[key] = payload
    if pending:
        keys = list(pending)
        for key, reason in zip(keys, _check_in_worker([payloads[k] for k in keys]), strict=True):
            for i in pending[key]:
                reasons[i] = reason
    return reasons


def unavailable_reason(cfg: qconfig.QBenchConfig) -> str | None:
    return unavailable_reasons([cfg])[0]


def unsupported_reason(cfg: qconfig.QBenchConfig) -> str | None:
    """Why the cell cannot run (a cell to skip, with this reason): its backend has no native kernel for its
    scheme, or its load scenario needs LoadGen where it is not installed; else None."""
    from importlib.util import find_spec

    from qbench.backends import get_backend

    if cfg.measure.scenario != "none" and find_spec("mlperf_loadgen") is None:
        return (f"measure.scenario={cfg.measure.scenario} runs through MLCommons LoadGen, which is not installed "
                f"(pip install 'qbench[loadgen]')")
    return get_backend(cfg.backend.name).unsupported_reason(cfg)


def _check_in_worker(payloads: list[dict]) -> list[str | None]:
    """Model/data checks of ``payloads`` ({"model": ..., "dataset": ...}) in a spawned worker process."""
    with tempfile.TemporaryDirectory(prefix="qbench-check-") as tmp:
        request = Path(tmp) / "check.json"
        request.write_text(json.dumps(payloads, default=str))
        proc = subprocess.run([sys.executable, "-m", "qbench.worker", "--check", str(request)],
                              capture_output=True, text=True)
        answer = request.with_suffix(".out.json")
        if proc.returncode != 0 or not answer.is_file():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise PreflightError(f"the model/data check process failed (exit {proc.returncode}): {tail}")
        return json.loads(answer.read_text())
