"""The one FP32 join (qbench.track.reference): which cell is a cell's FP32 reference. The rule itself, the
planner that adds missing references, and a real suite swept over ``backend.graph_optimization_level`` where the
suite summary, ``qbench compare`` and ``qbench check`` must name the same reference for every cell."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import pandas as pd
import pytest

from qbench.track.reference import Candidate, assign_references, group_key, relative_figures

FP32 = {"model.name": "digits_cnn", "dataset.name": "digits", "backend.name": "onnxruntime",
        "backend.graph_optimization_level": "all", "backend.int8_path": "auto", "measure.latency.min_calls": "30",
        "quant.method": "none", "tracking.uri": "sqlite:///a.db", "suite.name": "s", "debug.fault": "none"}


def _with(**changes: str) -> dict[str, object]:
    return {**FP32, **{k.replace("__", "."): v for k, v in changes.items()}}


def test_int8_only_keys_share_a_reference_and_runtime_keys_split_it() -> None:
    reference = group_key(FP32)
    for same in (_with(quant__method="ptq", quant__weights__bits="4"), _with(backend__int8_path="u8u8"),
                 _with(backend__quantized_engine="onednn", backend__pre_process="False"),
                 _with(tracking__uri="http://server", suite__name="other", debug__fault="abort"),
                 {**FP32, "model.path": float("nan")}):  # a param a row lacks: NaN in an MLflow frame
        assert group_key(same) == reference, same
    for other in (_with(backend__graph_optimization_level="disable"), _with(backend__name="torch"),
                  _with(measure__latency__min_calls="200"), _with(dataset__name="mnist"), _with(task__name="x")):
        assert group_key(other) != reference, other


def test_a_record_and_its_mlflow_row_have_the_same_key() -> None:
    from qbench.track import query
    from qbench.track.reference import record_candidate, row_candidate

    record = {"cell": "digits_cnn/w8a8-pc/onnxruntime", "cell_hash": "ab", "status": "finished", "metrics": {},
              "tags": {}, "config": {"model": {"name": "digits_cnn", "path": None},
                                     "backend": {"name": "onnxruntime", "providers": ["CPUExecutionProvider"]},
                                     "measure": {"latency": {"min_calls": 30}}, "quant": {"method": "ptq"}}}
    (row,) = [r for _, r in query.records_frame([record]).iterrows()]
    from_record, from_row = record_candidate(record), row_candidate(row)
    assert group_key(from_record.params) == group_key(from_row.params)
    assert (from_row.name, from_row.cell_hash, from_row.status) == (record["cell"], "ab", "finished")


def test_the_reference_is_the_same_whatever_order_the_cells_come_in() -> None:
    cells = [Candidate("m/fp32/ort", "b2", "finished", FP32), Candidate("m/fp32/ort", "a1", "finished", FP32),
             Candidate("m/fp32/ort", "00", "failed", FP32), Candidate("m/w8/ort", "c3", "finished",
                                                                      _with(quant__method="ptq")),
             Candidate("m/w8/ort", "d4", "finished", _with(quant__method="ptq",
                                                            backend__graph_optimization_level="basic"))]
    for order in itertools.permutations(range(len(cells))):
        shuffled = [cells[i] for i in order]
        chosen = assign_references(shuffled)
        refs = {c.cell_hash: None if j is None else shuffled[j].cell_hash for c, j in zip(shuffled, chosen,
                                                                                           strict=True)}
        # the first finished FP32 cell by (name, hash); none for a group without one
        assert refs == {"b2": "a1", "a1": "a1", "00": "a1", "c3": "a1", "d4": None}


def test_relative_figures() -> None:
    ref = {"acc.top1": 0.98, "latency.p50_ms": 2.0, "size.artifact_bytes": 400.0}
    cell = {"acc.top1": 0.97, "latency.p50_ms": 1.0, "size.artifact_bytes": 100.0}
    figures = relative_figures(cell, "int8", ref)
    assert figures["delta_top1_pt"] == pytest.approx(-1.0) and figures["acc_pct_fp32"] == pytest.approx(97 / 0.98)
    assert figures["speedup"] == 2.0 and figures["size_ratio"] == 4.0
    assert relative_figures(cell, "simulated", ref)["speedup"] is None  # float latency: no speed-up claimed
    assert set(relative_figures(cell, "int8", None).values()) == {None}
    assert relative_figures({"latency.p50_ms": math.nan}, "int8", ref)["speedup"] is None


def _planned(stdout: str) -> list[str]:
    return [line.split()[1] for line in stdout.splitlines() if line.strip()[:1].isdigit() and ". " in line]


@pytest.mark.parametrize("sweep,references", [("backend.graph_optimization_level=disable,all", 2),
                                              ("backend.int8_path=u8s8,u8u8", 1)])
def test_the_planner_adds_references_by_the_same_rule(run_qbench, sweep: str, references: int) -> None:
    out = run_qbench("run", "-m", "backend=onnxruntime", "quant=w8a8_pc", sweep, "suite.dry_run=true")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("(FP32 reference added)") == references
    planned = _planned(out.stdout)
    assert len(planned) == 2 + references
    # options only quantized models read are left out of an added reference (its name says none); a graph
    # optimization level other than the default is in the name
    assert sum(name.startswith("digits_cnn/fp32/onnxruntime") for name in planned) == references
    assert "digits_cnn/fp32/onnxruntime" in planned


# ------------------------------------------------------------------------------------ summary, compare, check
SWEEP = ("model=digits_cnn", "backend=onnxruntime", "quant=fp32,w8a8_pc",
         "backend.graph_optimization_level=disable,all", "measure=quick", "measure.latency.min_calls=20",
         "measure.latency.min_duration_s=0.2",
         "measure.latency.warmup_s=0.05", "measure.energy.duration_s=0.1", "measure.latency.throughput_batch_size=0")


def test_summary_compare_and_check_take_the_same_reference(run_qbench, tmp_path: Path) -> None:
    """One FP32 cell per graph optimization level: the summary, compare and check all pair each cell with the
    FP32 cell of its own level (a non-default level is in the cell name: ``/opt-disable``)."""
    from qbench.orchestrate.console import summary_frame
    from qbench.record import read_record
    from qbench.regress import baseline as bl
    from qbench.track import query

    out = run_qbench("run", "-m", *SWEEP)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    uri = f"sqlite:///{tmp_path}/results/mlflow.db"
    parent = query.find_suite_run(uri, suite="sweep")
    runs = query.latest_per_cell(query.cell_runs(uri, parent.info.run_id)).set_index("tags.qbench.cell_hash")
    assert len(runs) == 4
    level = runs["params.backend.graph_optimization_level"]
    fp32 = runs[runs["params.quant.method"] == "none"]
    expected = {h: fp32.index[fp32["params.backend.graph_optimization_level"] == level[h]][0] for h in runs.index}
    p50 = runs["metrics.latency.p50_ms"]
    assert len(set(expected.values())) == 2 and p50[fp32.index[0]] != p50[fp32.index[1]]  # two distinct references

    # the suite summary, from the local records
    records = [read_record(p) for p in Path(parent.data.tags["qbench.run_dir"]).glob("cells/*/record.json")]
    summary = summary_frame(records)
    assert dict(zip([r["cell_hash"] for r in records], summary["_fp32_cell_hash"], strict=True)) == expected
    # qbench compare: the frame it renders, and the speed-ups of its CSV
    frame = query.with_fp32_comparisons_per_suite_run(query.latest_per_cell(query.cell_runs(uri, parent.info.run_id)))
    assert dict(zip(frame["tags.qbench.cell_hash"], frame["fp32_cell_hash"], strict=True)) == expected
    csv = run_qbench("compare", "--format", "csv", "--columns", "run_id,speedup,speedup_unpaired,fp32_cell")
    assert csv.returncode == 0, csv.stderr
    compared = pd.read_csv(io.StringIO(csv.stdout)).set_index("run_id")
    for record, speedup, unpaired in zip(records, summary["speedup"], summary["speedup_unpaired"], strict=True):
        run_id = record["tracking"]["run_id"]
        assert compared.loc[run_id, "speedup"] == pytest.approx(speedup, rel=1e-12)
        assert compared.loc[run_id, "speedup_unpaired"] == pytest.approx(unpaired, rel=1e-12)
        # the unpaired speed-up is the reference's p50 over the cell's; the int8 cells' speed-up is the paired one
        assert unpaired == pytest.approx(p50[expected[record["cell_hash"]]] / p50[record["cell_hash"]], rel=1e-12)
        if record["config"]["quant"]["method"] != "none":
            assert speedup == record["metrics"]["speedup.paired"]
    # qbench check: the snapshot its gates read (keyed by name: every cell has its own)
    snapshot = bl.run_snapshot(uri, parent, with_samples=False)
    assert set(snapshot["cells"]) == {"digits_cnn/fp32/onnxruntime", "digits_cnn/w8a8-pc/onnxruntime",
                                      "digits_cnn/fp32/onnxruntime/opt-disable",
                                      "digits_cnn/w8a8-pc/onnxruntime/opt-disable"}
    for cell in snapshot["cells"].values():
        assert cell["latency"]["fp32_p50_ms"] == p50[expected[cell["cell_hash"]]]
