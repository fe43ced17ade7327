"""``qbench tune``: the prefix search on synthetic monotone metrics (fewer evaluations than exhaustive search, the
smallest k, the closest miss when nothing meets the budget), and one real run on digits_cnn whose tuned
configuration then runs with ``qbench run``."""

from __future__ import annotations

import json
import random
import shlex
from pathlib import Path

import pytest

from qbench.cli.tune import parse_algorithms, parse_moves
from qbench.cli.tune_output import best_candidate
from qbench.orchestrate.tune import Candidate, layers_override
from qbench.orchestrate.tune_latency import float_counts, slow_layers
from qbench.orchestrate.tune_search import exhaustive_size, prefix_search


def _monotone(size: int, seed: int) -> list[float]:
    """Drops for k = 0..size that never grow with k (moving more layers off the scheme never costs accuracy)."""
    rng = random.Random(seed)
    drops = sorted((rng.uniform(0, 20) for _ in range(size)), reverse=True)
    return [*drops, 0.0]


@pytest.mark.parametrize("seed", range(20))
def test_smallest_k_with_fewer_evaluations_than_exhaustive(seed: int) -> None:
    size = 30
    drops = _monotone(size, seed)
    budget = random.Random(seed).uniform(0, 20)
    calls: list[int] = []

    def evaluate(k: int) -> float:
        calls.append(k)
        return drops[k]

    result = prefix_search(evaluate, size, budget)
    assert result.smallest == min(k for k, d in enumerate(drops) if d <= budget)
    assert len(calls) == len(set(calls)) == result.evaluations  # every candidate measured once
    assert result.evaluations <= 2 * (size.bit_length() + 1) < size + 1 < exhaustive_size(size, 1)


def test_base_scheme_within_budget_is_one_evaluation() -> None:
    result = prefix_search(lambda k: 0.1, 10, 0.5)
    assert result.smallest == 0 and result.evaluations == 1


def test_none_meets_returns_the_closest_miss() -> None:
    drops = [9.0, 7.0, 5.0, 4.0, 3.5, 3.0]
    result = prefix_search(lambda k: drops[k], 5, 1.0)
    assert result.smallest is None and not result.capped
    assert result.closest() == 5 and result.drops[5] - 1.0 == pytest.approx(2.0)


def test_unmeasured_candidates_miss_and_max_evals_caps() -> None:
    result = prefix_search(lambda k: None if k == 1 else 10.0 - k, 8, 4.0)
    assert result.smallest == 6 and result.drops[1] is None
    capped = prefix_search(lambda k: 10.0 - k, 8, 4.0, max_evals=3)
    assert capped.capped and capped.evaluations == 3 and capped.smallest is None


def test_moves_and_the_layers_override() -> None:
    assert parse_moves("float,bits8") == {"float": {"float": True}, "bits8": {"bits": 8}}
    with pytest.raises(Exception, match="unknown move"):
        parse_moves("fp16")
    assert layers_override({"features.0": {"float": True}, "fc": {"bits": 8}}) == (
        "+quant.layers={features.0: {float: true}, fc: {bits: 8}}")
    assert layers_override({}) is None


def test_algorithms_besides_the_base_schemes() -> None:
    assert parse_algorithms("rtn,cle,adaround,cle", "rtn") == ["cle", "adaround"]
    assert parse_algorithms(None, "rtn") == [] and parse_algorithms("", "cle") == []


def test_best_is_the_fastest_within_budget_else_the_closest_miss() -> None:
    def cand(k: int, drop: float, p50: float) -> Candidate:
        return Candidate("float", k, [], [], {"status": "finished"}, {"drop": drop, "p50_ms": p50})

    pool = [cand(0, 3.0, 1.0), cand(2, 0.4, 1.5), cand(4, 0.1, 1.3)]
    best, met = best_candidate(pool, 0.5, "p50_ms")
    assert met and best is pool[2]
    best, met = best_candidate(pool, 0.05, "p50_ms")
    assert not met and best is pool[2]


def test_latency_objective_maximizes_the_speedup() -> None:
    def cand(k: int, drop: float, speedup: float) -> Candidate:
        return Candidate("float", k, [], [], {"status": "finished"}, {"drop": drop, "speedup": speedup})

    pool = [cand(0, 0.2, 0.97), cand(3, 0.2, 1.39), cand(2, 0.9, 2.0)]
    best, met = best_candidate(pool, 0.5, "speedup")
    assert met and best is pool[1]  # the fastest within the budget, not the fewest layers moved


def test_latency_stage_keeps_float_the_layers_slower_quantized() -> None:
    # µs per call, int8 candidate vs FP32 (resnet18's profile on ONNX Runtime, rounded): summed int8 time 400 µs,
    # so a layer must save more than 8 µs (2 %) to be worth a float island
    int8 = {"conv1": 36.0, "layer3.conv": 30.0, "layer4.conv1": 111.0, "layer4.conv2": 121.0, "fc": 15.0,
            "early": 87.0}
    fp32 = {"conv1": 35.0, "layer3.conv": 57.0, "layer4.conv1": 42.0, "layer4.conv2": 40.0, "fc": 9.0,
            "early": 80.0}
    assert slow_layers(int8, fp32) == [("layer4.conv2", 81.0), ("layer4.conv1", 69.0)]
    assert slow_layers(int8, fp32, skip={"layer4.conv2"}) == [("layer4.conv1", 69.0)]
    assert slow_layers(int8, fp32, min_share=0.01) == [("layer4.conv2", 81.0), ("layer4.conv1", 69.0),
                                                       ("early", 7.0), ("fc", 6.0)]
    assert slow_layers(int8, {}) == []  # layers without a float time are never judged
    assert float_counts(0) == [] and float_counts(1) == [1] and float_counts(3) == [3, 2] and float_counts(4) == [4, 2]


@pytest.mark.parametrize(("args", "message"), [
    (("--max-drop", "0.5", "--objective", "energy"), "--objective energy: unknown objective; valid values: latency"),
    (("--max-drop", "0.5", "--candidates", "fp16"), "--candidates fp16: unknown move"),
    (("--max-drop", "0.5", "quant=fp32"), "quant.method=none quantizes nothing"),
    (("--max-drop", "0.5", "--algorithms", "rtn,brecq"), "--algorithms brecq: unknown algorithm; valid values: rtn"),
])
def test_bad_input_is_one_line_exit_2(run_qbench, args: tuple[str, ...], message: str) -> None:
    out = run_qbench("tune", *args)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("qbench tune: ") and message in line


_QUICK = ("measure=quick", "measure.threads.intra_op=1", "measure.latency.min_calls=10",
          "measure.latency.min_duration_s=0.1", "measure.energy.duration_s=0", "measure.paired.enabled=false")


@pytest.mark.slow  # 20-60 s: keeps the default run near 15 min on 2 cores (pytest -m slow runs it)
def test_tune_digits_writes_a_preset_that_runs(run_qbench, tmp_path: Path) -> None:
    from qbench.track.mlflow_tracker import PARENT_TAG, client_for
    from qbench.track.query import NoRunsFound, find_suite_run

    # 2-bit weights lose most of digits_cnn's accuracy: the budget needs layers kept float
    out = run_qbench("tune", "model=digits_cnn", "quant=w4a8_pc", "quant.weights.bits=2", *_QUICK,
                     "--max-drop", "0.5", "--samples", "200")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "measured candidates: " in out.stdout and "16 configurations for exhaustive search" in out.stdout
    (folder,) = (tmp_path / "results" / "tune").glob("*/*")
    summary = json.loads((folder / "tune.json").read_text())
    assert summary["met"] and 1 < summary["measured"] < summary["exhaustive_space"] == 16
    assert summary["best"]["k"] >= 1 and summary["best"]["drop"] <= 0.5
    assert {"candidates.csv", "pareto.png", "report.md", "quant_tuned.yaml", "run_command.txt"} <= {
        p.name for p in folder.iterdir()}
    preset = (folder / "quant_tuned.yaml").read_text()
    assert "layers:" in preset and "float: true" in preset

    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    client = client_for(uri)
    exp = client.get_experiment_by_name("qbench").experiment_id
    (parent,) = client.search_runs([exp], filter_string="tags.`qbench.role` = 'tune'")
    children = client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(children) == summary["measured"] + 1  # the candidates and the FP32 reference
    assert {c.data.tags["qbench.role"] for c in children} == {"tune_candidate"}
    assert parent.data.metrics["tune.met"] == 1.0
    assert "pareto.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    with pytest.raises(NoRunsFound):
        find_suite_run(uri)  # suite tables never take a tune run for a suite run

    command = shlex.split((folder / "run_command.txt").read_text())
    assert command[:2] == ["qbench", "run"]
    run = run_qbench(*command[1:], "tracking=none")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"+{summary['best']['k']}xfp" in run.stdout


def test_none_meets_saves_the_best_found_with_its_miss_exit_1(run_qbench, tmp_path: Path) -> None:
    out = run_qbench("tune", "model=digits_cnn", "quant=w4a8_pc", "quant.weights.bits=2", *_QUICK, "tracking=none",
                     "--max-drop", "0.5", "--samples", "100", "--max-candidates", "1")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("qbench tune: ")]
    assert "no candidate meets the budget" in line and "missing it by" in line
    assert "stopped at --max-candidates" in out.stdout
    (folder,) = (tmp_path / "results" / "tune").glob("*/*")
    summary = json.loads((folder / "tune.json").read_text())
    assert not summary["met"] and summary["measured"] == 1 and summary["best"]["k"] == 0
    assert (folder / "quant_tuned.yaml").is_file() and (folder / "run_command.txt").is_file()


def test_latency_objective_profiles_the_cells_and_runs_the_latency_stage(run_qbench, tmp_path: Path) -> None:
    out = run_qbench("tune", "model=digits_cnn", "backend=onnxruntime", "quant=w8a8_pc", *_QUICK, "tracking=none",
                     "--max-drop", "1", "--samples", "100")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("latency stage: ")]
    assert "slower quantized than float in digits_cnn/w8a8-pc/onnxruntime" in line
    (folder,) = (tmp_path / "results" / "tune").glob("*/*")
    records = list(folder.rglob("record.json"))
    assert len(records) >= 2
    for record in records:  # FP32 and candidates: profiled
        assert any(a.endswith("layer_times.json") for a in json.loads(record.read_text())["artifacts"])
    # the profile is the tune's own instrument, not part of the configuration it recommends
    assert "layer_profile" not in (folder / "run_command.txt").read_text()


def test_algorithms_are_a_candidate_dimension(run_qbench, tmp_path: Path) -> None:
    # 3-bit weights: the base (min/max rounding) misses a 0.3 pt budget on its own; CLE gets its own prefix search
    out = run_qbench("tune", "model=digits_cnn", "quant=w4a8_pc", "quant.weights.bits=3", *_QUICK, "tracking=none",
                     "--max-drop", "0.3", "--samples", "100", "--algorithms", "cle", "--objective", "size")
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
    (folder,) = (tmp_path / "results" / "tune").glob("*/*")
    summary = json.loads((folder / "tune.json").read_text())
    assert summary["algorithms"] == ["rtn", "cle"]
    layers = len(summary["ranking"])
    assert summary["exhaustive_space"] == 2 * exhaustive_size(layers, 1) and summary["prefix_space"] == 2 * (layers + 1)
    by_algorithm = {c["algorithm"] for c in summary["candidates"] if c["move"] != "fp32"}
    assert by_algorithm == {"rtn", "cle"}, summary["candidates"]
    assert any("(cle)" in line for line in out.stdout.splitlines() if line.startswith("  float k="))
