"""MLflow run of a ``qbench analyze`` (per-layer sensitivity): tagged ``qbench.role=analysis`` and without the
``qbench.cell`` tag, so suite tables, ``compare`` and ``check`` (which read suite runs and cell runs,
:mod:`qbench.track.query`) never take it for a cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from qbench.track.mlflow_tracker import client_for, experiment_id, run_params

ROLE = "analysis"


def log_analysis(analysis: dict[str, Any], config: dict[str, Any], table: pd.DataFrame, files: list[Path],
                 tracking: Any, results_dir: Path) -> str:
    """Log the analysis as one MLflow run (params: the cell's config; metrics: FP32 / quantized metric, time;
    artifacts: the table, as an MLflow table and CSV, the bar plot, the worker's JSON); returns the run id."""
    from mlflow.entities import Metric, Param

    client = client_for(tracking.uri)
    exp_id = experiment_id(client, tracking.experiment, results_dir)
    tags = {"qbench.role": ROLE, "qbench.analysis": "sensitivity", "qbench.analysis_cell": analysis["cell"],
            "scheme": analysis["scheme"], "task": analysis["task"], "task.metric": analysis["metric"],
            "task.direction": "higher" if analysis["higher_is_better"] else "lower",
            "analysis.ranking_rule": analysis["ranking_rule"],
            "analysis.top_layers": ",".join(analysis["ranking"][:5])}
    run_id = client.create_run(exp_id, run_name=f"analyze:{analysis['cell']}", tags=tags).info.run_id
    figures = {"analysis.float_metric": analysis["float_metric"],
               "analysis.quantized_metric": analysis["quantized_metric"], "analysis.layers": analysis["layers"],
               "analysis.layers_scored": analysis["layers_scored"],
               "analysis.evaluation_samples": analysis["evaluation_samples"], "analysis.time_s": analysis["time_s"]}
    metrics = [Metric(k, float(v), 0, 0) for k, v in figures.items()]
    params = [Param(k, v) for k, v in run_params(config).items()]
    for i in range(0, max(len(metrics), len(params)), 100):
        client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
    client.log_table(run_id, data=table.where(table.notna(), None), artifact_file="sensitivity.json")
    for path in files:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id
