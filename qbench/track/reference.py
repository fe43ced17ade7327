"""The one FP32 join: which cell is a cell's FP32 reference, and the figures relative to it.

The suite summary, ``qbench compare`` (and the end-of-suite report) and ``qbench check`` all take a cell's
reference from :func:`assign_references`, on local records and on MLflow runs alike, and the relative figures
from :func:`relative_figures`. The planner adds a missing reference per :func:`group_key` too.

The rule: a cell's reference is the *finished* ``quant.method=none`` cell **of the same suite run** whose config
agrees with it on every key under ``model.``, ``dataset.``, ``task.``, ``backend.`` and ``measure.``, except the
backend keys that only change how a *quantized* model is built (:data:`QUANTIZED_ONLY_KEYS`).

- model, dataset, task: the same FP32 network on the same inputs, so accuracy deltas are the scheme's.
- backend (name, device, opset, graph optimization level, providers): they change what the FP32 model itself
  runs, so a sweep over ``backend.graph_optimization_level`` gets one reference per level.
- not the int8-only keys (``backend.int8_path``, ``backend.quantized_engine``, ``backend.pre_process``,
  ``backend.int8_source``, ``backend.observers``): an FP32 cell runs the same whatever they say, so a sweep over
  ``backend.int8_path`` shares one reference.
- measure (threads, latency protocol, batch sizes): a speed-up is a ratio of two latencies measured alike.
- not ``quant.`` (the scheme is what is compared), ``tracking.``, ``suite.``, ``debug.``, ``results_dir``.

Keys are compared as MLflow params (flattened, stringified), so a record and its MLflow run give the same key;
a key a row lacks (NaN in an MLflow frame) is left out. Should a group hold several finished FP32 cells, the
first by (cell name, cell hash) is the reference, whatever order the cells come in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qbench.metrics import as_number

GROUP_PREFIXES = ("model.", "dataset.", "task.", "backend.", "measure.")
# options that only change how a quantized model is built, run or timed; a new one belongs here
QUANTIZED_ONLY_KEYS = frozenset({"backend.int8_path", "backend.quantized_engine", "backend.pre_process",
                                 "backend.int8_source", "measure.paired.enabled", "measure.paired.block_ms",
                                 "measure.paired.min_block_calls",
                                 "measure.paired.min_blocks", "measure.paired.max_blocks",
                                 "measure.paired.max_duration_s"})
GroupKey = tuple[tuple[str, str], ...]


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def group_key(params: Mapping[str, Any]) -> GroupKey:
    """The keys a cell must share with its FP32 reference, from its flat params (``model.name`` -> value)."""
    return tuple(sorted((k, str(v)) for k, v in params.items()
                        if k.startswith(GROUP_PREFIXES) and k not in QUANTIZED_ONLY_KEYS and not _absent(v)))


@dataclass(frozen=True)
class Candidate:
    """What the join needs of a cell: its name, hash, status and flat params."""

    name: str
    cell_hash: str
    status: str
    params: Mapping[str, Any]

    @property
    def can_be_reference(self) -> bool:
        return self.params.get("quant.method") == "none" and self.status == "finished"


def assign_references(cells: Sequence[Candidate]) -> list[int | None]:
    """For each cell, the index in ``cells`` of its FP32 reference (itself for a reference), or None when its
    group has no finished FP32 cell. ``cells`` are the cells of one suite run."""
    keys = [group_key(c.params) for c in cells]
    chosen: dict[GroupKey, int] = {}
    for i, cell in enumerate(cells):
        if not cell.can_be_reference:
            continue
        j = chosen.get(keys[i])
        if j is None or (cell.name, cell.cell_hash) < (cells[j].name, cells[j].cell_hash):
            chosen[keys[i]] = i
    return [chosen.get(key) for key in keys]


def record_candidate(record: Mapping[str, Any]) -> Candidate:
    """A local record as a join candidate (its config flattened as MLflow params)."""
    from qbench.track.mlflow_tracker import run_params

    return Candidate(str(record.get("cell", "")), str(record.get("cell_hash", "")), str(record.get("status", "")),
                     run_params(record.get("config") or {}))


def row_candidate(row: Mapping[str, Any]) -> Candidate:
    """A row of an MLflow-shaped frame (``params.*``, ``tags.*`` columns, ``cell``, ``status``) as a candidate."""
    params = {k[len("params."):]: v for k, v in row.items() if isinstance(k, str) and k.startswith("params.")}
    cell_hash = row.get("tags.qbench.cell_hash")
    return Candidate(str(row.get("cell", "")), "" if _absent(cell_hash) else str(cell_hash),
                     str(row.get("status", "")), params)


def task_metric(tags: Mapping[str, Any]) -> tuple[str, bool]:
    """The task metric a cell's tags name and whether higher is better (``acc.top1``, higher, when untagged:
    image classification cells logged before tasks had tags)."""
    name = tags.get("task.metric")
    if not isinstance(name, str) or not name:
        return "acc.top1", True
    return name, tags.get("task.direction") != "lower"


def relative_figures(metrics: Mapping[str, Any], kernel: str, reference: Mapping[str, Any] | None,
                     task: tuple[str, bool] = ("acc.top1", True)) -> dict[str, float | None]:
    """The figures of a cell relative to its reference's metrics (None without a reference or a figure):
    ``delta_top1_pt``, ``acc_pct_fp32`` (the ``task`` metric — name, higher is better — as a percentage of the
    reference's, in its direction: top-1 / FP32 top-1, FP32 perplexity / perplexity), ``speedup`` (the cell's
    paired speed-up where it measured one, :mod:`qbench.measure.paired`, else ``speedup_unpaired``: the ratio of
    the two cells' p50s; none for simulated kernels: their latency is float latency) and ``size_ratio`` (see
    :mod:`qbench.metrics`)."""
    ref = reference or {}

    def pair(name: str) -> tuple[float | None, float | None]:
        return as_number(metrics.get(name)), as_number(ref.get(name))

    top1, ref_top1 = pair("acc.top1")
    value, ref_value = pair(task[0])
    p50, ref_p50 = pair("latency.p50_ms")
    size, ref_size = pair("size.artifact_bytes")
    unpaired = ref_p50 / p50 if p50 and ref_p50 and kernel != "simulated" else None
    paired = as_number(metrics.get("speedup.paired")) if kernel != "simulated" else None
    ratio = None
    if value is not None and ref_value is not None:
        ratio = value / ref_value * 100 if task[1] and ref_value else ref_value / value * 100 if value else None
    return {
        "delta_top1_pt": (top1 - ref_top1) * 100 if top1 is not None and ref_top1 is not None else None,
        "acc_pct_fp32": ratio,
        "speedup": paired if paired is not None else unpaired,
        "speedup_unpaired": unpaired,
        "size_ratio": ref_size / size if size and ref_size else None,
    }
