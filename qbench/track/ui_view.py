"""A suite run as MLflow's UI should open it: its runs table filtered to the suite (parent and cells, flat), the
key columns selected, every cell drawn in the chart view, and accuracy-vs-latency scatter charts on top.

The MLflow 3 runs page reads its search facets (``searchFilter``, ``orderByKey``, ``orderByAsc``, ...) from the
URL, but the table's columns and charts only from the browser's local storage or from a *shared view*: an
experiment tag ``mlflow.sharedViewState.<key>`` holding the view state as JSON, opened by
``#/experiments/<id>/runs?viewStateShareKey=<key>`` (what the UI's own "share view" writes; the UI ignores the
shared view when the URL also carries a search facet). ``workflowType=machine_learning`` opens the page in the
model-training view (MLflow 3.17's UI keys its GenAI/model-training switch on it, older 3.x on the experiment's
``mlflow.experimentKind`` tag, which qbench also sets).

Nesting: the runs table nests child runs under a collapsed parent unless the view is filtered and sorted by
something other than the start time; sorted by run name, parent and cells are all visible rows.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from qbench.track.mlflow_tracker import PARENT_TAG, SUITE_RUN_TAG

VIEW_TAG_PREFIX = "mlflow.sharedViewState."
WORKFLOW = {"workflowType": "machine_learning"}
DERIVED_PREFIX = "vs_fp32."  # the suite's relative figures, logged to its cell runs for the UI only
# the key columns: status, kernel, task metric, Δ FP32, p50, speed-up, deployment gap, size; the description
# (the cell's one-line finding) first, so it is on screen whatever the window's width
KEY_TAGS = ("qbench.status", "kernel")
KEY_METRICS = ("acc.top1", "lm.perplexity", "sim.spearman", f"{DERIVED_PREFIX}delta_top1_pt",
               "lm.delta_perplexity_pct", "sim.delta_spearman", "latency.p50_ms", f"{DERIVED_PREFIX}speedup",
               "acc.gap_top1", "size.artifact_bytes")
CHART_SECTION = "qbench: accuracy vs cost"
MODEL_METRICS_SECTION = "Model metrics"  # where the UI puts every other metric's bar chart (collapsed here)


def column(kind: str, key: str) -> str:
    """A runs-table column key as the UI writes it (``metrics.`acc.top1```)."""
    return f"{kind}.`{key}`"


def view_key(parent_run_id: str) -> str:
    return f"qbench-suite-{parent_run_id}"


def suite_filter(parent_run_id: str, tagged: bool = True) -> str:
    """The runs of a suite run: parent and cells by :data:`SUITE_RUN_TAG`; only the cells when ``tagged`` is
    false (suite runs logged before qbench set that tag)."""
    tag = SUITE_RUN_TAG if tagged else PARENT_TAG
    return f"tags.`{tag}` = '{parent_run_id}'"


def _charts(task_metric: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Chart cards and sections: the task metric against p50 latency, against size, and the speed-ups."""
    section = "qbench-section"

    def scatter(uuid: str, x: str) -> dict[str, Any]:
        return {"uuid": uuid, "type": "SCATTER", "runsCountToCompare": 500, "metricSectionId": section,
                "deleted": False, "isGenerated": False, "xaxis": {"key": x, "type": "METRIC"},
                "yaxis": {"key": task_metric, "type": "METRIC"}}

    cards = [scatter("qbench-acc-vs-p50", "latency.p50_ms"), scatter("qbench-acc-vs-size", "size.artifact_bytes"),
             {"uuid": "qbench-speedup", "type": "BAR", "runsCountToCompare": 500, "metricSectionId": section,
              "deleted": False, "isGenerated": False, "metricKey": f"{DERIVED_PREFIX}speedup"}]
    sections = [{"uuid": section, "name": CHART_SECTION, "display": True, "isReordered": False},
                {"uuid": "qbench-model-metrics", "name": MODEL_METRICS_SECTION, "display": False,
                 "isReordered": False}]
    return cards, sections


def view_state(parent_run_id: str, tagged: bool = True, task_metric: str = "acc.top1") -> dict[str, Any]:
    """The shared view of a suite run (search facets and the UI state keys MLflow's shared views keep)."""
    cards, sections = _charts(task_metric)
    return {
        "searchFilter": suite_filter(parent_run_id, tagged),
        "orderByKey": column("tags", "mlflow.runName"), "orderByAsc": True,
        "selectedColumns": [column("attributes", "Description"), *(column("tags", t) for t in KEY_TAGS),
                            *(column("metrics", m) for m in KEY_METRICS)],
        "runsHiddenMode": "SHOW_ALL",  # the charts draw every cell, not the first 10
        "compareRunCharts": cards, "compareRunSections": sections, "isAccordionReordered": False,
        "useGroupedValuesInCharts": False, "hideEmptyCharts": True,
    }


def save_view(client: Any, experiment_id: str, parent_run_id: str, tagged: bool = True,
              task_metric: str = "acc.top1") -> str:
    """Store the suite run's shared view in its experiment; returns the view's key (idempotent)."""
    key = view_key(parent_run_id)
    state = json.dumps(view_state(parent_run_id, tagged, task_metric), separators=(",", ":"))
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, state)
    return key


def runs_url(base: str, experiment_id: str, key: str | None = None, charts: bool = False) -> str:
    """The runs page of an experiment in the model-training view; with a shared view ``key``, that view (and
    its chart view with ``charts``)."""
    query: dict[str, str] = {}
    if key:
        query["viewStateShareKey"] = key
    if charts:
        query["compareRunsMode"] = "CHART"
    query.update(WORKFLOW)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def run_url(base: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """A run's page in the model-training view (``artifact``: that artifact opened in the run's artifact
    browser); ``base`` "" gives the in-app link a markdown note can carry."""
    path = (f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
            + f"?{urlencode(WORKFLOW)}")
    return f"{base.rstrip('/')}/{path}" if base else path


def _task_metric(cells: list[dict[str, Any]]) -> str:
    """The task metric the suite's charts plot (its first finished cell's; top-1 by default)."""
    for cell in cells:
        if cell.get("status") == "finished" and (name := (cell.get("tags") or {}).get("task.metric")):
            return str(name)
    return "acc.top1"


def publish_suite(uri: str, name: str, parent_run_id: str, cells: list[dict[str, Any]],
                  rows: list[dict[str, Any]], report_artifact: str | None = None) -> str:
    """At the end of a suite run: each cell's description with the figures relative to its FP32 reference
    (``rows``: the suite summary's, in the order of ``cells``) and those figures as ``vs_fp32.*`` metrics for
    the UI's columns and charts; the parent's description (the summary table, linking ``report_artifact`` when
    the parent run has it) and the suite's shared view. Returns the view's key."""
    from mlflow.entities import Metric

    from qbench.metrics import as_number
    from qbench.track.mlflow_tracker import client_for, record_times_ms
    from qbench.track.notes import NOTE_TAG, cell_note, suite_note

    client = client_for(uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    link = None
    if report_artifact:
        folder = report_artifact.rsplit("/", 1)[0] if "/" in report_artifact else None
        if any(f.path == report_artifact for f in client.list_artifacts(parent_run_id, folder)):
            link = run_url("", experiment_id, parent_run_id, report_artifact)
    client.set_tag(parent_run_id, SUITE_RUN_TAG, parent_run_id)
    client.set_tag(parent_run_id, NOTE_TAG, suite_note(name, rows, link))
    for record, row in zip(cells, rows, strict=True):
        run_id = (record.get("tracking") or {}).get("run_id")
        if not run_id:
            continue
        speedup, delta = as_number(row.get("speedup")), as_number(row.get("delta_fp32_pt"))
        client.set_tag(run_id, NOTE_TAG, cell_note(record, speedup, delta))
        stamp = record_times_ms(record)[1]  # the record's time: logging again adds no second point
        figures = {"speedup": speedup, "delta_top1_pt": delta}
        metrics = [Metric(DERIVED_PREFIX + k, v, stamp, 0) for k, v in figures.items() if v is not None]
        if metrics:
            client.log_batch(run_id, metrics=metrics)
    return save_view(client, experiment_id, parent_run_id, task_metric=_task_metric(cells))


def latest_suite_view(client: Any, experiment_id: str) -> tuple[Any, str] | None:
    """The latest suite (parent) run of an experiment and the key of its shared view, stored now if needed
    (suite runs logged before qbench stored views, or still running); None without a suite run."""
    from qbench.track.query import SUITE_ROLE_FILTER

    runs = client.search_runs([experiment_id], filter_string=SUITE_ROLE_FILTER,
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    parent = runs[0]
    parent_id = parent.info.run_id
    key = view_key(parent_id)
    experiment = client.get_experiment(experiment_id)
    if VIEW_TAG_PREFIX + key in (experiment.tags or {}):
        return parent, key
    tagged = bool(client.search_runs([experiment_id], filter_string=suite_filter(parent_id), max_results=1))
    if tagged and SUITE_RUN_TAG not in parent.data.tags:
        client.set_tag(parent_id, SUITE_RUN_TAG, parent_id)
    return parent, save_view(client, experiment_id, parent_id, tagged)
