"""Entry point of a cell's spawned worker process: ``python -m qbench.worker CELL_DIR``.

Other modes: ``--prepare DIR`` trains the reference model, ``--check FILE`` checks user files, ``--analyze DIR``
writes a per-layer sensitivity analysis (:mod:`qbench.worker.analyze`).

Reads ``CELL_DIR/config.yaml`` (the resolved cell config), runs the cell, writes ``CELL_DIR/result.json``.
A Python exception becomes a ``failed`` result with its traceback; a hard crash (segfault, abort) writes
nothing and the parent records it from the exit signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from omegaconf import OmegaConf

from qbench import config as qconfig
from qbench.backends import backend_schema
from qbench.config.threads import PARENT_PID_ENV
from qbench.record import CellResult, write_json_atomic

# exit status of a worker whose orchestrator was gone before the worker could tie its life to it
ORPHANED = 3
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Get SIGKILL when the orchestrator that spawned this worker dies (a kill -9 must not leave a measuring
    orphan). Set here, first thing, rather than by a ``preexec_fn`` in the forked child, which is unsafe while
    the orchestrator runs threads; an orchestrator that died before this point is caught by the parent check."""
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(expected):
        print(f"qbench.worker: the orchestrator (pid {expected}) is gone; exiting", file=sys.stderr)
        sys.exit(ORPHANED)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    return run(sys.argv[1:] if argv is None else argv)


def run(argv: list[str]) -> int:
    """The worker's work in this process (a spawned interpreter, or a child of :mod:`qbench.worker.forkserver`)."""
    if argv[0] == "--check":
        return _check(Path(argv[1]))
    prepare = argv[0] == "--prepare"
    workdir = Path(argv[-1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    raw = OmegaConf.load(workdir / "config.yaml")
    schema = OmegaConf.structured(qconfig.QBenchConfig)
    schema.backend = OmegaConf.structured(backend_schema(raw.backend.name))
    cfg_node = OmegaConf.merge(schema, raw)
    cell_hash = qconfig.cell_hash(qconfig.cell_config_dict(cfg_node))
    if prepare:
        return _prepare(cfg_node)
    if argv[0] == "--analyze":  # per-layer sensitivity (qbench analyze): DIR/analysis.json
        from qbench.worker.analyze import main as analyze

        return analyze(workdir, cfg_node)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        cfg = qconfig.validate(cfg_node)
        from qbench.worker.pipeline import run_cell

        result = run_cell(cfg, workdir, cell_hash)
    except Exception as exc:
        traceback.print_exc()
        result = CellResult(
            status="failed",
            cell=qconfig.cell_name(cfg_node),
            cell_hash=cell_hash,
            error=f"{type(exc).__name__}: {exc}",
            started_at=started,
            ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
    write_json_atomic(workdir / "result.json", result.to_json())
    _log_threads_in_effect()
    return 0 if result.status == "finished" else 1


def _log_threads_in_effect() -> None:
    """What the measuring pools really were (not what the config asked for): isolation tests read it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        logging.getLogger("qbench").info(
            "threads in effect: torch intra-op %d, inter-op %d; OMP_NUM_THREADS=%s", torch.get_num_threads(),
            torch.get_num_interop_threads(), os.environ.get("OMP_NUM_THREADS"))


def _check(request: Path) -> int:
    """Model and data checks the orchestrator cannot make without torch (qbench.orchestrate.preflight): reads a
    JSON list of {"model": ..., "dataset": ...}, writes the reasons (None = loadable) next to it."""
    from qbench.data import check_dataset, check_inputs_fit
    from qbench.zoo.hf import task_fit_reason
    from qbench.zoo.models import check_model

    reasons = []
    for item in json.loads(request.read_text()):
        model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(qconfig.ModelConfig), item["model"]))
        dataset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(qconfig.DatasetConfig), item["dataset"]))
        reasons.append(check_dataset(dataset, model) or check_model(model) or check_inputs_fit(dataset, model)
                       or task_fit_reason(dataset, model))
    request.with_suffix(".out.json").write_text(json.dumps(reasons))
    return 0


def _prepare(cfg_node) -> int:
    """One-time work shared by cells: train and cache the reference model (progress on the terminal)."""
    from qbench.worker.threads import apply_threads, resolve_threads
    from qbench.zoo.reference import load_reference

    cfg = qconfig.validate(cfg_node)
    if qconfig.fault_injected(cfg, "prepare"):
        raise RuntimeError("injected fault (debug.fault=prepare)")
    apply_threads(*resolve_threads(cfg))
    _, meta = load_reference(cfg.model, cfg.dataset, show_progress=True)
    logging.getLogger("qbench").info(
        "%s trained in %.0f s: top-1 %.2f %% on the evaluation split", cfg.model.name, meta["train_time_s"],
        100 * meta["eval_top1"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
