"""MLflow runs of ``qbench tune``: one parent run tagged ``qbench.role=tune`` whose children are the measured
candidates (and the FP32 reference), each a normal cell run (logged by the cell path) tagged
``qbench.role=tune_candidate``. Suite tables and ``qbench check`` look for ``qbench.role=suite`` parents
(:mod:`qbench.track.query`), so a tune run is never taken for a suite run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from qbench.track.mlflow_tracker import client_for, experiment_id

ROLE = "tune"
CANDIDATE_ROLE = "tune_candidate"


def open_tune_run(tracking: Any, results_dir: Path, name: str, tags: dict[str, str]) -> str:
    """Create the parent run ``tune:<name>``; returns its id."""
    client = client_for(tracking.uri)
    exp_id = experiment_id(client, tracking.experiment, results_dir)
    run = client.create_run(exp_id, run_name=f"tune:{name}", tags={"qbench.role": ROLE, **tags})
    return run.info.run_id


def tag_candidate(tracking: Any, run_id: str, tags: dict[str, str]) -> None:
    """Mark a cell run as a candidate of a tune run (its role, ``k``, the layers moved)."""
    client = client_for(tracking.uri)
    for key, value in {"qbench.role": CANDIDATE_ROLE, **tags}.items():
        client.set_tag(run_id, key, str(value)[:5000])


def close_tune_run(tracking: Any, run_id: str, metrics: dict[str, float], tags: dict[str, str],
                   table: pd.DataFrame, files: list[Path], status: str = "FINISHED") -> None:
    """Log the search's figures, the candidates table (an MLflow table) and the files, then end the run."""
    from mlflow.entities import Metric

    client = client_for(tracking.uri)
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value)[:5000])
    client.log_table(run_id, data=table.astype(object).where(table.notna(), None), artifact_file="candidates.json")
    for path in files:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status)
