"""Measuring the candidates of ``qbench tune``: each one is a real cell run through the normal cell path
(:func:`qbench.orchestrate.runner.run_cell_job`: spawned worker, the real backend, local record, MLflow child run
of the tune's parent run), and so is the FP32 reference on the same backend, measured in the same run.

A candidate is the base cell's overrides plus one ``+quant.layers=...`` override (the base scheme's own per-layer
overrides, then the move applied to the top ``k`` ranked layers): the same text ``qbench run`` takes, so the
configuration written at the end is exactly what was measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbench import config as qconfig
from qbench.record import cell_dir
from qbench.track.reference import relative_figures, task_metric

log = logging.getLogger("qbench.tune")


def _is_layers_override(arg: str) -> bool:
    key = arg.split("=", 1)[0].lstrip("+~")
    return key == "quant.layers" or key.startswith("quant.layers.")


def is_algorithm_override(arg: str) -> bool:
    """Whether a ``qbench run`` override sets ``quant.algorithm``."""
    return arg.split("=", 1)[0].lstrip("+~") == "quant.algorithm"


def _yaml_value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def layers_override(layers: dict[str, dict[str, Any]]) -> str | None:
    """``+quant.layers={a: {float: true}, b: {bits: 8}}`` (Hydra's syntax), None when there are none."""
    if not layers:
        return None
    body = ", ".join(f"{pattern}: {{{', '.join(f'{k}: {_yaml_value(v)}' for k, v in o.items())}}}"
                     for pattern, o in layers.items())
    return f"+quant.layers={{{body}}}"


@dataclass
class Candidate:
    """One measured configuration: the move, how many ranked layers took it, its record and figures."""

    move: str
    k: int
    layers: list[str]
    overrides: list[str]
    record: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    layer_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # layer -> what this candidate moved
    algorithm: str | None = None  # quant.algorithm when the candidate changed it (None: the base scheme's)

    @property
    def finished(self) -> bool:
        return self.record.get("status") == "finished"


class TuneSession:
    """The cells of one tune run: the FP32 reference, then candidates on demand (memoized by configuration)."""

    def __init__(self, compose: Callable[[list[str]], Any], base_overrides: list[str],
                 base_layers: dict[str, dict[str, Any]], run_dir: Path, parent_run_id: str | None,
                 relative: bool) -> None:
        self.compose = compose  # overrides -> the composed config node (qbench.cli.compose)
        self.base = [a for a in base_overrides if not _is_layers_override(a)]
        self.base_layers = base_layers
        self.run_dir = run_dir
        self.parent_run_id = parent_run_id
        self.relative = relative
        self.reference: dict[str, Any] | None = None
        self.candidates: list[Candidate] = []
        self._by_overrides: dict[tuple[str, ...], Candidate] = {}

    def overrides_for(self, layers: dict[str, dict[str, Any]], algorithm: str | None = None) -> list[str]:
        """The ``qbench run`` overrides of the base cell with ``layers`` moved (after the base's own overrides) and,
        when given, the scheme's PTQ algorithm replaced."""
        extra = layers_override({**self.base_layers, **layers})
        base = self.base if algorithm is None else [
            *(a for a in self.base if not is_algorithm_override(a)), f"quant.algorithm={algorithm}"]
        return [*base, *([extra] if extra else [])]

    def _run(self, overrides: list[str], role_tags: dict[str, str]) -> dict[str, Any]:
        from qbench.orchestrate.runner import run_cell_job

        node = self.compose(overrides)
        cfg = qconfig.validate(node)
        name, cell_hash = qconfig.cell_name(cfg), qconfig.cell_hash(node)
        log.info("measuring %s", name)
        outcome = run_cell_job(node, cell_dir(self.run_dir, name, cell_hash),
                               suite={"name": "tune", "run_dir": str(self.run_dir)}, parent_run_id=self.parent_run_id)
        run_id = outcome.record.get("tracking", {}).get("run_id")
        if run_id and cfg.tracking.enabled:
            from qbench.track.tune import tag_candidate

            try:
                tag_candidate(cfg.tracking, run_id, role_tags)
            except Exception as exc:  # cosmetic: the record and its run are there
                log.warning("could not tag run %s: %s", run_id, qconfig.one_line(exc)[:200])
        return outcome.record

    def measure_reference(self) -> dict[str, Any]:
        """The FP32 cell on the same backend (same overrides without the scheme's)."""
        from qbench.orchestrate.suite import reference_overrides

        self.reference = self._run(reference_overrides(self.base), {"tune.k": "fp32", "tune.move": "none"})
        return self.reference

    def measure(self, move: str, k: int, layers: list[str], override: dict[str, Any],
                algorithm: str | None = None) -> Candidate:
        """The candidate with ``override`` on ``layers`` (the top ``k`` ranked), measured once per configuration."""
        return self.measure_layers(move, k, {name: dict(override) for name in layers}, algorithm)

    def measure_layers(self, move: str, k: int, layers: dict[str, dict[str, Any]],
                       algorithm: str | None = None) -> Candidate:
        """The candidate with each layer's own override (``layers``) and, when given, another PTQ algorithm,
        measured once per configuration."""
        overrides = self.overrides_for(layers, algorithm)
        key = tuple(overrides)
        if key not in self._by_overrides:
            t0 = time.perf_counter()
            record = self._run(overrides, {"tune.k": str(k), "tune.move": move, "tune.layers": ",".join(layers),
                                           "tune.algorithm": algorithm or "base"})
            candidate = Candidate(move, k, list(layers), overrides, record, layer_overrides=dict(layers),
                                  algorithm=algorithm)
            candidate.figures = self.figures(record)
            candidate.figures["time_s"] = time.perf_counter() - t0
            self._by_overrides[key] = candidate
            self.candidates.append(candidate)
        return self._by_overrides[key]

    def figures(self, record: dict[str, Any]) -> dict[str, Any]:
        """Metric, drop vs FP32 (points for ``acc.*`` metrics, else the metric's unit; % with ``relative``),
        p50, speed-up vs the FP32 cell (paired where the cell measured it), sizes, BOPs."""
        assert self.reference is not None
        metrics, ref = record.get("metrics") or {}, self.reference.get("metrics") or {}
        name, higher = task_metric(record.get("tags") or {})
        value, ref_value = metrics.get(name), ref.get(name)
        drop = None
        if record.get("status") == "finished" and value is not None and ref_value is not None:
            drop = (ref_value - value) * (1 if higher else -1)
            drop = drop / abs(ref_value) * 100 if self.relative and ref_value else drop * (
                100 if name.startswith("acc.") else 1)
        rel = relative_figures(metrics, (record.get("tags") or {}).get("kernel", ""), ref, (name, higher))
        return {"metric_name": name, "metric": value, "fp32_metric": ref_value, "drop": drop,
                "p50_ms": metrics.get("latency.p50_ms"), "speedup": rel["speedup"],
                # the paired speed-up's 95 % CI (None where the cell measured no paired window)
                "speedup_ci": None if metrics.get("speedup.paired_ci95_low") is None else
                [metrics["speedup.paired_ci95_low"], metrics["speedup.paired_ci95_high"]],
                "size_bytes": metrics.get("size.artifact_bytes"), "bops": metrics.get("opcount.bops"),
                "kernel": (record.get("tags") or {}).get("kernel"), "status": record.get("status"),
                "error": record.get("error")}
