"""The gates of ``qbench check``: each compares one figure of one cell between a baseline and a suite run (two
snapshots, see :mod:`qbench.regress.baseline`) and says pass, warn or fail, with old -> new and why.

Per cell, in this order (a cell whose status gate fails gets no other gate):

- ``status``: a baseline cell missing from the run, newly failing or newly skipped fails; a cell the
  baseline lacks warns (update the baseline to gate it).
- ``acc.top1``: fails when top-1 drops more than ``top1_tolerance_pt`` points below the baseline's.
- the task metric of other tasks (``lm.perplexity``, ``sim.spearman``, ...): fails when it is more than
  ``task_tolerance_pct`` % worse than the baseline's, in the task's direction.
- ``acc.floor``: quantized cells; fails when the task metric is below a fraction of the *same run's* FP32 cell's
  (``acc_pct_fp32``: top-1 / FP32 top-1, FP32 perplexity / perplexity):
  ``floors[<scheme label>]``, else ``floor_8bit`` for schemes whose weights and activations have >= 8 bits.
- ``latency.speedup`` (quantized cells on real kernels) or ``latency.p50_ms`` (FP32 cells, advisory by
  default): see :func:`latency_gate`. Simulated kernels get no latency gate (their latency is float latency).
- ``memory.peak_rss_{inference,load}_mb``, ``size.{artifact,packed_model}_bytes``: a rise fails when it exceeds
  both the relative and the absolute tolerance (MB = 2**20 bytes, as qbench's memory figures).

- ``deployment_gap`` (cells on real backends that record a simulation of their scheme): checks the run alone,
  baseline or not. Fails when the deployed top-1 falls more than ``deployment_gap_pt`` points below the
  simulation's, or agreement with the simulation is below ``min_agreement_simulated``; the detail names the likely
  cause (:func:`qbench.measure.gap.deployment_gap`). Without a baseline it is the only gate (:func:`run_gates`).

Plus one suite-level gate, ``host``: a host fingerprint (``env.host_id``: CPU model, ISA, cores, torch and
onnxruntime versions) other than the baseline's warns, and every latency gate then warns instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from qbench.config import CheckConfig
from qbench.measure.gap import deployment_gap
from qbench.metrics import metric

PASS, WARN, FAIL = "pass", "warn", "fail"
OUTCOMES = (PASS, WARN, FAIL)
SUITE_CELL = "(suite)"
# below this many samples per side the rank test says nothing useful: the tolerance alone decides
MIN_SAMPLES = 5
_EPS = 1e-9  # figures equal to a tolerance pass (floats printed with 2 decimals must not fail by rounding)
# the resources gated by their rise, grouped as snapshots keep them (``cell["memory"]["peak_rss_load_mb"]``)
GATED_RESOURCES = {"memory": ("peak_rss_inference_mb", "peak_rss_load_mb"),
                   "size": ("artifact_bytes", "packed_model_bytes")}


@dataclass(frozen=True)
class Gate:
    """One comparison: ``old`` (baseline) and ``new`` (run) in ``unit``; ``detail`` says why the outcome."""

    cell: str
    name: str
    outcome: str
    old: float | str | None = None
    new: float | str | None = None
    unit: str = ""
    detail: str = ""

    @property
    def old_text(self) -> str:
        return format_value(self.old, self.unit)

    @property
    def new_text(self) -> str:
        return format_value(self.new, self.unit)

    @property
    def message(self) -> str:
        """One line naming the cell, the metric, old and new values: ``cell metric: old -> new (detail)``."""
        return f"{self.cell} {self.name}: {self.old_text} -> {self.new_text}" + (f" ({self.detail})" if self.detail
                                                                                 else "")


def format_value(value: float | str | None, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if unit == "B":
        for scale, suffix in ((2**20, "MiB"), (2**10, "KiB")):
            if abs(value) >= scale:
                return f"{value / scale:.1f} {suffix}"
        return f"{value:.0f} B"
    formats = {"pt": "{:+.2f} pt", "%": "{:.2f} %", "% fp32": "{:.2f} % of FP32", "x": "{:.2f}x", "ms": "{:.3f} ms",
               "MB": "{:.1f} MB"}
    return formats.get(unit, "{:.4g}").format(value)


def exit_status(gates: Sequence[Gate]) -> int:
    """0 when no gate failed (warnings allowed), 1 on a regression."""
    return 1 if any(g.outcome == FAIL for g in gates) else 0


# --------------------------------------------------------------------------------------------- status
def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:200] if (text or "").strip() else "no reason recorded"


def status_gate(cell: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> Gate:
    """Missing, newly failing or newly skipped cells fail; new cells warn."""
    if new is None:
        return Gate(cell, "status", FAIL, old["status"] if old else None, "missing", detail="cell missing from the run")
    if old is None:
        return Gate(cell, "status", WARN, "missing", new["status"],
                    detail="new cell, not in the baseline: not gated until the baseline is updated")
    was, now = old["status"], new["status"]
    if now not in ("finished", "skipped") and was != now:
        return Gate(cell, "status", FAIL, was, now, detail=f"newly failing: {_first_line(new.get('error'))}")
    if now == "skipped" and was == "finished":
        return Gate(cell, "status", FAIL, was, now, detail=f"newly skipped: {_first_line(new.get('error'))}")
    if now == "failed":
        return Gate(cell, "status", WARN, was, now, detail=f"still failing: {_first_line(new.get('error'))}")
    if now == "finished" and was != "finished":
        return Gate(cell, "status", PASS, was, now, detail="figures not gated until the baseline is updated")
    return Gate(cell, "status", PASS, was, now)


# ------------------------------------------------------------------------------------------- accuracy
def floor_for(cell: dict[str, Any], settings: CheckConfig) -> tuple[float, str] | None:
    """The accuracy floor of a quantized cell (fraction of its FP32 cell's task metric) and where it comes from."""
    method, scheme = cell.get("method"), cell.get("scheme")
    if method in (None, "none"):
        return None
    if scheme in settings.floors:
        return settings.floors[scheme], f"floors.{scheme}"
    wbits, abits = cell.get("weight_bits"), cell.get("activation_bits")
    if wbits is not None and wbits >= 8 and (method == "weight_only" or (abits is not None and abits >= 8)):
        return settings.floor_8bit, "floor_8bit"
    return None


def accuracy_gates(cell: str, old: dict[str, Any], new: dict[str, Any], settings: CheckConfig) -> list[Gate]:
    gates = []
    top1 = metric("acc.top1")
    before, after = old["accuracy"].get("top1"), new["accuracy"].get("top1")
    if before is not None and after is not None:
        change_pt = -top1.worse_by(before, after) * 100 + 0.0  # fraction -> points; + 0.0: no "-0.00"
        outcome = FAIL if -change_pt > settings.top1_tolerance_pt + _EPS else PASS
        gates.append(Gate(cell, top1.name, outcome, before * top1.scale, after * top1.scale, top1.shown,
                          f"{change_pt:+.2f} pt; fails below -{settings.top1_tolerance_pt:g} pt"))
    gates += _task_metric_gate(cell, old["accuracy"], new["accuracy"], settings)
    floor = floor_for(new, settings)
    if floor is not None:
        value, source = floor
        pct_old, pct_new = old["accuracy"].get("acc_pct_fp32"), new["accuracy"].get("acc_pct_fp32")
        if pct_new is None:
            gates.append(Gate(cell, "acc.floor", WARN, pct_old, None, "% fp32",
                              "no FP32 reference in the run: floor not checked"))
        else:
            outcome = FAIL if pct_new < value * 100 - _EPS else PASS
            task = new["accuracy"].get("task_metric") or "acc.top1"
            gates.append(Gate(cell, "acc.floor", outcome, pct_old, pct_new, "% fp32",
                              f"floor {value * 100:g} % of the run's FP32 {task}, from {source}"))
    return gates


def _task_metric_gate(cell: str, old: dict[str, Any], new: dict[str, Any], settings: CheckConfig) -> list[Gate]:
    """The task metric of a task other than image classification (perplexity, Spearman ρ, a user task's):
    fails when it is more than ``task_tolerance_pct`` % worse than the baseline's, in its direction. Top-1 has
    its own gate above, in points."""
    name = new.get("task_metric")
    before, after = old.get("task"), new.get("task")
    if name in (None, "acc.top1") or old.get("task_metric") != name or before is None or after is None:
        return []
    worse_pct = (before - after if new.get("task_higher_is_better", True) else after - before) / abs(before) * 100 \
        if before else 0.0
    outcome = FAIL if worse_pct > settings.task_tolerance_pct + _EPS else PASS
    return [Gate(cell, name, outcome, before, after, "",
                 f"{-worse_pct:+.2f} % ({'higher' if new.get('task_higher_is_better', True) else 'lower'} is "
                 f"better); fails beyond -{settings.task_tolerance_pct:g} %")]


# -------------------------------------------------------------------------------------------- latency
def slower_p_value(old: Sequence[float] | None, new: Sequence[float] | None) -> float | None:
    """p-value of the one-sided Mann-Whitney U test "new tends to be larger (slower) than old"; None when a side
    has fewer than MIN_SAMPLES samples.

    One-sided because only a slow-down is a regression. The test is on ranks, so the heavy right tail of
    latency samples (preemption, page faults) does not dominate it as it would a t-test; and it sees the whole
    distribution, not only the median. Successive calls are not independent (a noisy neighbour slows a stretch
    of them), so p-values are optimistic: the test only ever *confirms* a tolerance breach, it never fails a
    cell on its own.
    """
    if old is None or new is None or len(old) < MIN_SAMPLES or len(new) < MIN_SAMPLES:
        return None
    return float(mannwhitneyu(np.asarray(new, float), np.asarray(old, float), alternative="greater").pvalue)


def _normalized(latency: dict[str, Any]) -> np.ndarray | None:
    samples, reference = latency.get("samples_ms"), latency.get("fp32_p50_ms")
    if not samples or not reference:
        return None
    return np.asarray(samples, float) / reference


def latency_gate(cell: str, old: dict[str, Any], new: dict[str, Any], settings: CheckConfig,
                 same_host: bool) -> Gate | None:
    """Latency of one cell, judged so that machine noise does not page anyone.

    - Quantized cells on real kernels (``latency.speedup``): the speed-up vs the FP32 cell measured *in the same
      run* (the paired one, timed interleaved with FP32 in the cell's worker, where the cell has it), so a
      uniformly slower or faster machine cancels out. It fails when it lost more than
      ``speedup_tolerance`` (relative) **and** the Mann-Whitney test on the samples, each divided by its own
      run's FP32 p50, says the new ones are significantly slower (p < ``alpha``). Normalising by the run's own
      FP32 median makes the test about the same quantity as the tolerance (the speed-up), and keeps it valid
      across machines; within a run it is a constant factor, so it changes no rank.
    - FP32 cells (``latency.p50_ms``): their speed-up is 1 by definition, so their own p50 is compared, raw
      samples against raw samples (``latency_tolerance``, same test). That is only meaningful on the same host,
      and even there the load of a shared machine moves it (a plain re-run on the 2-core development VM measured
      +83 %, p < 1e-100, not tagged unstable): it warns, and fails only with ``fp32_latency_fails: true`` (a
      dedicated, quiet runner).
    - A breach the test does not confirm warns; without samples on both sides the tolerance alone decides.
    - A fail becomes a warning when either side is tagged ``latency.unstable`` (for a speed-up: the cell or its
      FP32 reference), or when the host differs.
    """
    before, after = old["latency"], new["latency"]
    fp32 = new.get("method") == "none"
    key = "p50_ms" if fp32 else "speedup"
    o, n = before.get(key), after.get(key)
    if o is None or n is None:
        return None
    figure = metric("latency.p50_ms" if fp32 else "speedup")
    name, unit = f"latency.{key}", figure.unit
    worse = figure.worse_by(o, n) / o  # relative: a slower p50 or a smaller speed-up is positive
    if fp32:
        tolerance = settings.latency_tolerance
        p_value = slower_p_value(before.get("samples_ms"), after.get("samples_ms"))
        change = f"p50 {worse:+.1%}; fails beyond +{tolerance:.0%}"
    else:
        tolerance = settings.speedup_tolerance
        p_value = slower_p_value(_normalized(before), _normalized(after))
        kind = "paired speed-up" if after.get("paired") else "speed-up"
        change = f"{kind} {-worse:+.1%}; fails beyond -{tolerance:.0%}"
    notes = [change]
    notes.append("no samples on both sides: tolerance only" if p_value is None else f"Mann-Whitney p={p_value:.2g}")
    if worse <= tolerance + _EPS:
        outcome = PASS
    elif p_value is not None and p_value >= settings.alpha:
        outcome = WARN
        notes.append(f"not significant at alpha={settings.alpha:g}: noise")
    else:
        outcome = FAIL
    # a speed-up is as unstable as either of its two medians
    unstable = any(side.get("unstable") or (name == "latency.speedup" and side["latency"].get("fp32_unstable"))
                   for side in (old, new))
    if outcome == FAIL and unstable:
        outcome = WARN
        notes.append("latency tagged unstable")
    if outcome == FAIL and not same_host:
        outcome = WARN
        notes.append("host differs from the baseline's")
    if outcome == FAIL and name == "latency.p50_ms" and not settings.fp32_latency_fails:
        outcome = WARN
        notes.append("an FP32 cell's own latency only warns (fp32_latency_fails: false)")
    return Gate(cell, name, outcome, o, n, unit, "; ".join(notes))


# ------------------------------------------------------------------------------------- deployment gap
def deployment_gap_gate(cell: str, old: dict[str, Any] | None, new: dict[str, Any],
                        settings: CheckConfig) -> Gate | None:
    """Deployed vs simulated top-1 of the run's cell (None when it has no simulation to compare with). The
    baseline's gap, when it recorded one, is shown beside the run's but does not change the outcome: a gap is
    wrong on its own, whatever the baseline had."""
    inputs = new.get("deployment")
    if not inputs:
        return None
    verdict = deployment_gap(inputs["metrics"], inputs["tags"], settings)
    if not verdict.checked:
        return None
    before = (old or {}).get("deployment")
    old_gap = deployment_gap(before["metrics"], before["tags"], settings).gap_pt if before else None
    if verdict.flagged:
        return Gate(cell, "deployment_gap", FAIL, old_gap, verdict.gap_pt, "pt", verdict.explanation)
    return Gate(cell, "deployment_gap", PASS, old_gap, verdict.gap_pt, "pt",
                f"{verdict.figures}; fails below -{settings.deployment_gap_pt:g} pt or "
                f"{settings.min_agreement_simulated * 100:g} % agreement")


# ------------------------------------------------------------------------------------ memory and size
def _rise_gate(cell: str, name: str, old: float | None, new: float | None, pct: float, absolute: float
               ) -> Gate | None:
    """A figure whose rise is a regression (memory, size), beyond both tolerances."""
    if old is None or new is None:
        return None
    figure = metric(name)
    unit = figure.unit
    rise = figure.worse_by(old, new)
    allowed = max(abs(old) * pct / 100, absolute)
    outcome = FAIL if rise > allowed + _EPS else PASS
    relative = f", {rise / old:+.1%}" if old else ""
    bound = format_value(absolute, unit) if unit == "B" else f"{absolute:g} {unit}"
    sign = "+" if rise >= 0 else "-"
    detail = f"{sign}{format_value(abs(rise), unit)}{relative}; fails above +{pct:g} %" + (f" and +{bound}" if absolute
                                                                                          else "")
    return Gate(cell, name, outcome, old, new, unit, detail)


def resource_gates(cell: str, old: dict[str, Any], new: dict[str, Any], settings: CheckConfig) -> list[Gate]:
    tolerances = {"memory": (settings.memory_tolerance_pct, settings.memory_tolerance_mb),
                  "size": (settings.size_tolerance_pct, settings.size_tolerance_mb * 2**20)}  # MB -> B
    gates = [_rise_gate(cell, f"{group}.{key}", old[group].get(key), new[group].get(key), *tolerances[group])
             for group, keys in GATED_RESOURCES.items() for key in keys]
    return [g for g in gates if g is not None]


# ----------------------------------------------------------------------------------------- evaluation
def host_gate(old: dict[str, Any] | None, new: dict[str, Any] | None) -> Gate:
    """Suite-level: the run's host fingerprint vs the baseline's (a difference warns)."""
    old, new = old or {}, new or {}
    before, after = old.get("host_id"), new.get("host_id")
    if before is not None and before == after:
        return Gate(SUITE_CELL, "host", PASS, before, after, detail=f"{_host_text(new)}: latency comparable")
    changes = [f"{key}: {old.get(key)} -> {new.get(key)}" for key in ("cpu", "isa", "physical_cores", "torch",
                                                                      "onnxruntime", "cuda")
               if old.get(key) != new.get(key)]
    return Gate(SUITE_CELL, "host", WARN, before, after,
                detail="different host fingerprint: latency gates only warn" + (f" ({'; '.join(changes)})"
                                                                               if changes else ""))


def _host_text(host: dict[str, Any]) -> str:
    return f"{host.get('cpu') or 'unknown CPU'}, torch {host.get('torch') or '?'}"


def cell_gates(cell: str, old: dict[str, Any] | None, new: dict[str, Any] | None, settings: CheckConfig) -> list[Gate]:
    """Every gate of one cell: the status gate, the comparisons with the baseline when both sides finished, and
    the deployment gap of a finished run cell (baseline or not)."""
    status = status_gate(cell, old, new)
    gap = deployment_gap_gate(cell, old, new, settings) if new is not None and new["status"] == "finished" else None
    own = [gap] if gap is not None else []
    if old is None or new is None or old["status"] != "finished" or new["status"] != "finished":
        return [status, *own]
    same_host = old.get("host_id") is not None and old.get("host_id") == new.get("host_id")
    gates = [status, *accuracy_gates(cell, old, new, settings)]
    latency = latency_gate(cell, old, new, settings, same_host)
    if latency is not None:
        gates.append(latency)
    return gates + resource_gates(cell, old, new, settings) + own


def evaluate(baseline: dict[str, Any], run: dict[str, Any], settings: CheckConfig) -> list[Gate]:
    """All gates: the host, then every cell of the baseline or the run, by name."""
    gates = [host_gate(baseline.get("host"), run.get("host"))]
    for cell in sorted(set(baseline["cells"]) | set(run["cells"])):
        gates += cell_gates(cell, baseline["cells"].get(cell), run["cells"].get(cell), settings)
    return gates


def run_gates(run: dict[str, Any], settings: CheckConfig) -> list[Gate]:
    """The gates a suite run answers on its own, with no baseline: the deployment gap of every finished cell."""
    gates = [deployment_gap_gate(name, None, cell, settings) for name, cell in sorted(run["cells"].items())
             if cell["status"] == "finished"]
    return [g for g in gates if g is not None]
