"""Suites: a grid of cells run as one unit (Hydra sweeper), resumable, with one MLflow parent run.

``qbench run +suite=vision`` composes ``suites/vision.yaml`` (registered in the ``suite`` config group),
which sets ``hydra.mode: MULTIRUN`` and the grid in ``hydra.sweeper.params``. The sweeper here
(registered as ``hydra/sweeper=qbench`` through ``hydra_plugins/qbench_sweeper``):

1. expands the grid like Hydra's basic sweeper (command-line overrides narrow or extend it),
2. composes and validates *every* cell before running any (a bad value stops the suite, exit 2),
3. adds the FP32 reference of each group of cells (:func:`qbench.track.reference.group_key`) that lacks one,
4. records cells the backend cannot run as ``skipped`` with the reason,
5. trains the reference models once, up front (file-locked cache); the cells of a model that fails to train
   are recorded as failed and the others run,
6. opens (or, on resume, re-opens) the suite's MLflow parent run and hands cells to whatever Hydra
   launcher is configured, skipping cells that already have a finished record in this suite run,
7. prints the summary table, logs it to the parent run and sets the exit status.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf, open_dict

from qbench import config as qconfig
from qbench.orchestrate.runner import prestart_fork_server
from qbench.record import RECORD_NAME, CellResult, cell_dir, make_record, read_record, write_record
from qbench.storage import write_json_atomic
from qbench.track.mlflow_tracker import run_params
from qbench.track.reference import QUANTIZED_ONLY_KEYS, GroupKey, group_key

log = logging.getLogger("qbench.suite")
_INTERNAL_KEYS = ("suite.run_dir", "suite.parent_run_id", "resume")


@dataclass
class PlannedCell:
    """One cell of the grid after composition and validation."""

    overrides: list[str]
    cfg_node: DictConfig
    cfg: qconfig.QBenchConfig
    cell_hash: str
    name: str
    skip_reason: str | None = None
    auto_reference: bool = False

    @property
    def is_reference(self) -> bool:
        return self.cfg.quant.method == "none"

    def group_key(self) -> GroupKey:
        """Cells compared with the same FP32 reference (the rule of :mod:`qbench.track.reference`)."""
        return group_key(run_params(qconfig.cell_config_dict(self.cfg_node)))


# ------------------------------------------------------------------------------------------- grid
def expand_grid(params: dict[str, str] | None, arguments: list[str]) -> list[list[str]]:
    """Every combination of the sweep: suite params first, command-line arguments override them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    combined = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    parsed = OverridesParser.create().parse_overrides(combined)
    # a later override of the same key replaces an earlier one (command line narrows the suite)
    by_key: OrderedDict[str, Any] = OrderedDict()
    for override in parsed:
        by_key[override.get_key_element()] = override
    (batch,) = BasicSweeper.split_arguments(list(by_key.values()), None)
    return [_without_foreign_settings(list(job)) for job in batch]


def _without_foreign_settings(job: list[str]) -> list[str]:
    """A sweep over both torch and onnxruntime with ``backend.graph_optimization_level=a,b`` sweeps that setting
    on the onnxruntime cells only: a torch cell drops the settings it does not have (its copies are one cell)."""
    from qbench.backends import foreign_setting

    backend = next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == "backend"), "torch")
    return [o for o in job if not (o.startswith("backend.") and foreign_setting(backend, o.split("=", 1)[0][8:]))]


def _is_quant_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "quant" or key.startswith("quant.") or key in QUANTIZED_ONLY_KEYS


def reference_overrides(overrides: list[str]) -> list[str]:
    """The FP32 reference of a cell: the same overrides without the scheme's (and without the backend options
    that only quantized models read), plus quant=fp32."""
    return [o for o in overrides if not _is_quant_override(o)] + ["quant=fp32"]


# ------------------------------------------------------------------------------------------ state
def suite_key(name: str, arguments: list[str], params: dict[str, str] | None) -> str:
    """Identity of a suite invocation: its name, grid and overrides (not resume flags or run dirs)."""
    relevant = sorted(a for a in arguments if a.split("=", 1)[0].lstrip("+~") not in _INTERNAL_KEYS)
    blob = json.dumps({"name": name, "params": params or {}, "args": relevant}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class SuiteState:
    """``results/suites/<name>/<key>/state.json``: the current run dir of a suite invocation."""

    def __init__(self, results_dir: Path, name: str, key: str) -> None:
        self.base = results_dir / "suites" / name / key
        self.path = self.base / "state.json"

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def start(self, resume: bool, meta: dict[str, Any]) -> dict[str, Any]:
        """Continue the latest run of this invocation (resume) or start a new one."""
        state = self.load()
        if resume and state is not None:
            state.update(status="running", error=None)
            self.save(state)
            return state
        stamp = time.strftime("%Y%m%d-%H%M%S")
        state = {**meta, "run_dir": str((self.base / f"run-{stamp}").resolve()), "parent_run_id": None,
                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running"}
        self.save(state)
        return state

    def save(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.path, state)


def finished_record(run_dir: Path, name: str, cell_hash: str) -> dict[str, Any] | None:
    path = cell_dir(run_dir, name, cell_hash) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("status") in ("finished", "skipped") else None


# ------------------------------------------------------------------------------------ the sweeper
class SuiteSweeper(Sweeper):
    """Hydra sweeper that runs a qbench suite (see module docstring)."""

    def __init__(self, params: dict[str, str] | None = None, max_batch_size: int | None = None) -> None:
        self.params = dict(params or {})
        self.max_batch_size = max_batch_size
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- planning
    def _compose(self, overrides: list[str]) -> DictConfig:
        assert self.config is not None
        node = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(node):  # the task sees no hydra node either; its job.num is unset at this point
            node.pop("hydra", None)
        return node

    def _plan_cell(self, overrides: list[str], auto_reference: bool = False) -> PlannedCell:
        from qbench.orchestrate.preflight import unsupported_reason

        node = self._compose(overrides)
        try:
            cfg = qconfig.validate(node)
        except qconfig.ConfigError as exc:
            raise qconfig.ConfigError(f"{' '.join(overrides)}: {exc}") from None
        cfg_dict = qconfig.cell_config_dict(node)
        return PlannedCell(list(overrides), node, cfg, qconfig.cell_hash(cfg_dict), qconfig.cell_name(cfg),
                           unsupported_reason(cfg), auto_reference)

    def plan(self, arguments: list[str]) -> list[PlannedCell]:
        """All cells of the grid, validated, with FP32 references added, de-duplicated, references first."""
        cells = [self._plan_cell(job) for job in expand_grid(self.params, arguments)]
        _check_files(cells)
        groups: dict[GroupKey, list[PlannedCell]] = {}
        for cell in cells:
            groups.setdefault(cell.group_key(), []).append(cell)
        for members in list(groups.values()):
            if not any(c.is_reference for c in members):
                cells.append(self._plan_cell(reference_overrides(members[0].overrides), auto_reference=True))
        unique: dict[str, PlannedCell] = {}
        for cell in cells:
            unique.setdefault(cell.cell_hash, cell)
        return sorted(unique.values(), key=lambda c: (c.cfg.model.name, c.cfg.backend.name, not c.is_reference))

    # -- running
    def sweep(self, arguments: list[str]) -> Any:
        from qbench.orchestrate import app
        from qbench.orchestrate.console import finish_suite

        assert self.config is not None
        name = self.config.suite.name or "sweep"
        try:
            planned = self.plan(arguments)
        except qconfig.ConfigError as exc:
            print(f"qbench: {exc}", flush=True)
            app.exit_status = 2
            return []
        if self.config.suite.dry_run:
            from qbench.orchestrate.console import print_plan

            print_plan(name, planned)
            return []
        if planned and _is_sequential(self.launcher):  # cells run in this process: its fork server imports now
            prestart_fork_server(planned[0].cfg)
        results_dir = Path(self.config.results_dir)
        state_store = SuiteState(results_dir, name, suite_key(name, arguments, self.params))
        state = state_store.start(bool(self.config.resume), {"suite": name, "arguments": arguments})
        run_dir = Path(state["run_dir"])
        tracking_cfg = planned[0].cfg.tracking if planned else None
        t0 = time.monotonic()
        state["parent_run_id"] = _open_parent_run(state, name, tracking_cfg, results_dir, planned)
        state["cells"] = len(planned)
        state_store.save(state)

        try:
            self._run_cells(name, planned, run_dir, state)
        except BaseException as exc:  # Ctrl-C, or a failure of the orchestrator itself: say so, do not hang
            _close_abandoned(state_store, state, tracking_cfg, exc)
            raise
        state["status"] = "complete"
        state["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        state_store.save(state)
        app.exit_status = finish_suite(name, planned, run_dir, state, tracking_cfg, time.monotonic() - t0)
        return []

    def _run_cells(self, name: str, planned: list[PlannedCell], run_dir: Path, state: dict[str, Any]) -> None:
        """Record the skipped cells, train the reference models, then launch the cells without a finished record."""
        from qbench.orchestrate.console import console, progress_for

        assert self.config is not None
        parent_run_id = state["parent_run_id"]
        todo, done = [], []
        for cell in planned:
            record = finished_record(run_dir, cell.name, cell.cell_hash)
            (done if record is not None else todo).append((cell, record))
        skipped = [c for c, _ in todo if c.skip_reason]
        runnable = [c for c, _ in todo if not c.skip_reason]
        console.print(f"suite {name}: {len(planned)} cells ({len(done)} already finished in this suite run, "
                      f"{len(skipped)} skipped as unsupported, {len(runnable)} to run)")
        for cell in skipped:
            _record_skipped(cell, run_dir, name, parent_run_id)
        unavailable = _prepare_shared(runnable)
        if unavailable:  # the cells of a model that could not be trained fail; the others run
            blocked = [c for c in runnable if _reference_key(c) in unavailable]
            console.print(f"[red]{len(blocked)} cell(s) not run: {'; '.join(sorted(set(unavailable.values())))}[/red]")
            for cell in blocked:
                reason = unavailable[str(_reference_key(cell))]
                _record_without_worker(cell, run_dir, name, parent_run_id, "failed", f"reference model: {reason}")
            runnable = [c for c in runnable if _reference_key(c) not in unavailable]

        parallel = local_parallelism(self.launcher, self.config)
        if parallel > 1:
            console.print(f"[yellow]warning: {parallel} cells run at once on this host: latency figures are tagged "
                          "latency.contended=true (exclusive cores are needed for comparable timings)[/yellow]")
        with progress_for(len(runnable), resumed_cells=len(done)) as progress:
            batch_size = self.max_batch_size or (1 if _is_sequential(self.launcher) else len(runnable) or 1)
            for start in range(0, len(runnable), batch_size):
                batch = runnable[start:start + batch_size]
                progress.starting(batch)
                context = _context_overrides(run_dir, parent_run_id, parallel)
                try:
                    self.launcher.launch([cell.overrides + context for cell in batch], initial_job_idx=start)
                except Exception as exc:  # a launcher failure fails its cells, not the suite
                    log.warning("launcher failed for %d cell(s): %s", len(batch), qconfig.one_line(exc)[:300])
                for cell in batch:  # a job that died without a record (launcher, node, pickling) is recorded
                    if not cell_dir(run_dir, cell.name, cell.cell_hash).joinpath(RECORD_NAME).is_file():
                        _record_without_worker(cell, run_dir, name, parent_run_id, "failed",
                                               "the launcher's job ended without a record (see the launcher's log)")
                progress.finished(batch)


def _check_files(cells: list[PlannedCell]) -> None:
    """Every cell's model and data must be loadable here (one check process for the whole grid)."""
    from qbench.orchestrate.preflight import PreflightError, unavailable_reasons

    try:
        reasons = unavailable_reasons([cell.cfg for cell in cells])
    except PreflightError as exc:
        raise qconfig.ConfigError(str(exc)) from None
    for cell, reason in zip(cells, reasons, strict=True):
        if reason:
            raise qconfig.ConfigError(f"{' '.join(cell.overrides)}: {reason}")


def _is_sequential(launcher: Any) -> bool:
    return type(launcher).__name__ == "BasicLauncher"


def local_parallelism(launcher: Any, config: DictConfig) -> int:
    """How many cells the launcher runs at once on *this* host (joblib: n_jobs; cluster launchers: 1)."""
    if type(launcher).__name__ != "JoblibLauncher":
        return 1
    import os

    n_jobs = int(OmegaConf.select(config, "hydra.launcher.n_jobs", default=-1) or -1)
    return os.cpu_count() or 1 if n_jobs < 0 else n_jobs


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _context_overrides(run_dir: Path, parent_run_id: str | None, parallel_jobs: int = 1) -> list[str]:
    out = [f"suite.run_dir={_quote(str(run_dir))}", f"suite.parallel_jobs={parallel_jobs}"]
    out.append(f"suite.parent_run_id={parent_run_id}" if parent_run_id else "suite.parent_run_id=null")
    return out


def _reference_key(cell: PlannedCell) -> str | None:
    """Cache key of the reference model a cell trains on first use (None: the model is the user's)."""
    from qbench.zoo import cache

    return cache.reference_key(cell.cfg.model, cell.cfg.dataset) if cell.cfg.model.source == "reference" else None


def _prepare_shared(cells: list[PlannedCell]) -> dict[str, str]:
    """Train every reference model the suite needs once, before the cells (which then only load it).
    Returns why each model that could not be trained failed, by reference key."""
    from qbench.orchestrate.runner import ensure_reference_model
    from qbench.zoo import cache

    failures: dict[str, str] = {}
    seen: set[str] = set()
    for cell in cells:
        key = _reference_key(cell)
        if key is None or key in seen:
            continue
        seen.add(key)
        try:
            tmp = cache.reference_dir(cell.cfg.model, cell.cfg.dataset).parent / f".prepare-{key}"
            tmp.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(OmegaConf.create(qconfig.cell_config_dict(cell.cfg_node)), tmp / "config.yaml")
            ensure_reference_model(cell.cfg, tmp)
        except Exception as exc:  # recorded as the failure of the cells that need this model
            failures[key] = qconfig.one_line(exc)[:500]
            log.warning("%s", failures[key])
    return failures


def _close_abandoned(state_store: SuiteState, state: dict[str, Any], tracking: Any, exc: BaseException) -> None:
    """A suite run stopped before its summary: state.json and the MLflow parent run say how it ended (a re-run
    of the same command resumes it, re-opening the parent run)."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    state.update(status="interrupted" if interrupted else "failed", ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 error=None if interrupted else qconfig.one_line(exc)[:500])
    state_store.save(state)
    if state.get("parent_run_id") and tracking is not None and tracking.enabled:
        from qbench.track.mlflow_tracker import client_for

        try:
            client_for(tracking.uri).set_terminated(state["parent_run_id"], "KILLED" if interrupted else "FAILED")
        except Exception as close_exc:
            log.warning("could not close the suite's MLflow parent run: %s", qconfig.one_line(close_exc)[:200])


def _record_skipped(cell: PlannedCell, run_dir: Path, suite: str, parent_run_id: str | None) -> None:
    _record_without_worker(cell, run_dir, suite, parent_run_id, "skipped", cell.skip_reason or "")


def _record_without_worker(cell: PlannedCell, run_dir: Path, suite: str, parent_run_id: str | None, status: str,
                           error: str) -> None:
    """Record (locally, then in MLflow) a cell that no worker ran: skipped, or lost by the launcher."""
    from qbench.orchestrate.runner import track

    directory = cell_dir(run_dir, cell.name, cell.cell_hash)
    result = CellResult(status=status, cell=cell.name, cell_hash=cell.cell_hash, error=error,
                        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    record = make_record(result, qconfig.cell_config_dict(cell.cfg_node), directory, {"name": suite})
    path = write_record(directory, record)
    track(record, path, cell.cfg, parent_run_id)


def _open_parent_run(state: dict[str, Any], name: str, tracking: Any, results_dir: Path,
                     planned: list[PlannedCell]) -> str | None:
    """Create the suite's MLflow parent run, or re-open it when resuming; None when MLflow is off/down."""
    if tracking is None or not tracking.enabled:
        return None
    from qbench.measure.env import fingerprint, host_id
    from qbench.track.mlflow_tracker import client_for, experiment_id

    try:
        client = client_for(tracking.uri)
        if state.get("parent_run_id"):
            client.update_run(state["parent_run_id"], status="RUNNING")
            return state["parent_run_id"]
        info = fingerprint()
        tags = {"qbench.suite": name, "qbench.role": "suite", "qbench.git_sha": info["git_sha"],
                "qbench.host_id": host_id(info), "qbench.host": info["host"], "qbench.cpu": info["cpu.model"],
                "qbench.started_at": state["started_at"], "qbench.run_dir": state["run_dir"],
                "qbench.cells": str(len(planned))}
        run = client.create_run(experiment_id(client, tracking.experiment, results_dir), run_name=f"suite:{name}",
                                tags=tags)
        return run.info.run_id
    except Exception as exc:  # a down server must not stop the suite: records are synced later
        log.warning("MLflow unreachable, the suite runs without a parent run (%s)", qconfig.one_line(exc)[:200])
        return None
