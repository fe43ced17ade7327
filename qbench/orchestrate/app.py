"""Hydra entry point: ``qbench run`` hands its arguments to :func:`hydra_main` unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from qbench import config as qconfig
from qbench.backends import register_backend_schemas
from qbench.config import paths

qconfig.register_configs()
register_backend_schemas()

# Exit status of the last task (Hydra's decorated main returns nothing): read by qbench.cli.
exit_status = 0


def task(cfg: DictConfig) -> object:
    """One Hydra job = one cell."""
    global exit_status
    from qbench.orchestrate.cell_summary import print_cell
    from qbench.orchestrate.runner import run_cell_job

    if cfg.suite.run_dir:
        return suite_task(cfg)
    try:
        outcome = run_cell_job(cfg, Path(HydraConfig.get().runtime.output_dir))
    except qconfig.ConfigError as exc:
        print(f"qbench: {exc}", file=sys.stderr)
        exit_status = 2
        return None
    record = outcome.record
    if record["status"] == "skipped":
        print(f"qbench: {record['cell']} cannot run here: {record['error']}", file=sys.stderr)
        exit_status = 2
        return outcome
    print_cell(record)
    exit_status = 0 if record["status"] == "finished" else 1
    return outcome


def suite_task(cfg: DictConfig) -> object:
    """A cell launched by the suite sweeper (in this process or in a launcher's worker): it goes to the
    suite run's directory, attaches to the parent run, and is reused if it already finished there."""
    from qbench.orchestrate.runner import CellOutcome, run_cell_job
    from qbench.orchestrate.suite import finished_record
    from qbench.record import cell_dir

    run_dir = Path(cfg.suite.run_dir)
    name, cell_hash = qconfig.cell_name(cfg), qconfig.cell_hash(cfg)
    existing = finished_record(run_dir, name, cell_hash)
    if existing is not None:
        return CellOutcome(existing, None, reused=True)
    directory = cell_dir(run_dir, name, cell_hash)
    return run_cell_job(cfg, directory, suite={"name": cfg.suite.name or "sweep", "run_dir": str(run_dir)},
                        parent_run_id=cfg.suite.parent_run_id)


@hydra.main(config_path=str(paths.CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> object:
    return task(cfg)
