"""One cell from the CLI to MLflow: record first, then an MLflow run with the expected metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXPECTED_METRICS = (
    "acc.top1", "acc.top5", "acc.agreement_fp32", "acc.sqnr_db", "acc.kl_fp32", "latency.p50_ms", "latency.p90_ms",
    "latency.p99_ms", "latency.mean_ms", "latency.std_ms", "size.artifact_bytes", "size.packed_model_bytes",
    "memory.peak_rss_load_mb", "memory.peak_rss_inference_mb", "memory.rss_anon_mb", "memory.rss_file_mb",
    "latency.n", "latency.cv", "latency.robust_cv", "latency.ci95_low_ms", "latency.ci95_high_ms",
    "throughput.samples_per_s", "energy.estimate_mj_per_inference", "energy.model_total_uj", "opcount.macs",
    "opcount.bops", "threads.intra_op", "threads.inter_op", "size.fp32_weight_bytes",
)
EXPECTED_TAGS = (
    "kernel", "energy.source", "threads", "env.cpu.model", "env.cpu.isa", "env.cpu.physical_cores",
    "env.cpu.governor", "env.version.torch", "env.version.onnxruntime", "env.version.onnx", "env.version.mlflow",
    "env.torch.quantized_engine", "env.git_sha", "env.host_id",
)


def _records(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("results/runs/*/record.json"))]


@pytest.fixture(scope="module")
def default_run(qbench_cache, tmp_path_factory):
    """`qbench run measure=quick` twice in a fresh directory (first may train; second must reuse)."""
    import os
    import subprocess
    import sys

    cwd = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "QBENCH_CACHE": str(qbench_cache)}
    outs = [subprocess.run([sys.executable, "-m", "qbench", "run", "measure=quick"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=600) for _ in range(2)]
    return cwd, outs


def test_run_writes_record_and_mlflow_run(default_run) -> None:
    cwd, outs = default_run
    assert outs[0].returncode == 0, outs[0].stderr[-2000:]
    records = _records(cwd)
    assert len(records) == 2
    record = records[0]
    assert record["status"] == "finished" and record["cell"] == "digits_cnn/w8a8-pc/torch"
    assert record["tags"]["kernel"] == "simulated"
    assert record["tracking"]["synced"] is True
    for key in EXPECTED_METRICS:
        assert key in record["metrics"], key
    assert record["metrics"]["acc.top1"] >= 0.96

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{cwd}/results/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["qbench"])
    assert len(runs) == 2
    run = runs[runs["run_id"] == record["tracking"]["run_id"]].iloc[0]
    assert run["metrics.acc.top1"] == pytest.approx(record["metrics"]["acc.top1"])
    assert run["metrics.latency.p50_ms"] == pytest.approx(record["metrics"]["latency.p50_ms"])
    assert run["params.quant.weights.bits"] == "8" and run["params.quant.weights.granularity"] == "per_channel"
    assert run["tags.kernel"] == "simulated" and run["tags.qbench.cell_hash"] == record["cell_hash"]
    assert run["tags.env.version.torch"].startswith("2.14")
    for key in EXPECTED_METRICS:
        assert f"metrics.{key}" in run and run[f"metrics.{key}"] == pytest.approx(record["metrics"][key]), key
    for key in EXPECTED_TAGS:
        assert run[f"tags.{key}"], key
    assert run["tags.mlflow.runName"] == "digits_cnn/w8a8-pc/torch"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(record["tracking"]["run_id"])}
    assert {"config.yaml", "record.json", "worker.log", "latency_samples.csv"} <= artifacts


def test_summary_fits_one_screen_and_second_run_reuses_model(default_run) -> None:
    _, outs = default_run
    assert outs[1].returncode == 0
    assert "digits_cnn/w8a8-pc/torch" in outs[1].stdout and "top-1" in outs[1].stdout
    assert len(outs[1].stdout.strip().splitlines()) <= 25
    assert "not cached yet" not in outs[1].stdout + outs[1].stderr


def test_resnet18_4bit_per_tensor_runs(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "model=resnet18", "quant.weights.bits=4", "quant.weights.granularity=per_tensor",
                     "measure=quick", "tracking=none")
    assert out.returncode == 0, out.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert record["cell"] == "resnet18/w4a8/torch" and record["status"] == "finished"
    assert record["metrics"]["size.weight_bytes.int4"] > 0
    assert record["tracking"]["synced"] is False  # tracking=none: local record only


def test_unreachable_tracking_server_keeps_the_record(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "quant=fp32", "measure=quick", "tracking=server", "tracking.uri=http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert record["status"] == "finished" and record["tracking"]["synced"] is False
    assert record["tracking"]["error"]
