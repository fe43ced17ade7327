"""Reports: ``qbench compare`` against the MLflow metrics of the same runs, its formats, filters and errors;
the Pareto fronts against brute force; the end-of-suite plots and HTML report (logged to the parent run,
identical from MLflow and from the local records, rendered by headless Chromium)."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from suite_cells import SMOKE_TORCH, SMOKE_TORCH_CELLS

if TYPE_CHECKING:
    from qbench.report.plots import Plot



def _qbench(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "250", **(env or {})})


@pytest.fixture(scope="module")
def smoke(qbench_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One ``qbench run +suite=smoke`` shared by the tests of this module; its MLflow runs read back."""
    cwd = tmp_path_factory.mktemp("report-smoke")
    out = _qbench(cwd, "run", "+suite=smoke", SMOKE_TORCH, env={"QBENCH_CACHE": str(qbench_cache)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    import mlflow

    uri = f"sqlite:///{cwd}/results/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("qbench").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("qbench.role") == "suite")
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == SMOKE_TORCH_CELLS
    return SimpleNamespace(cwd=cwd, uri=uri, client=client, parent=parent, children=children, stdout=out.stdout,
                           report_dir=cwd / "results" / "reports" / "smoke" / parent.info.run_id)


def _brute_force_front(points: list[tuple[float, ...]], senses: list[str]) -> set[int]:
    """Indices of the points no other point dominates, by exhaustive pairwise comparison."""
    signed = [tuple(v if s == "max" else -v for v, s in zip(p, senses, strict=True)) for p in points]
    front = set()
    for i, p in enumerate(signed):
        if any(np.isnan(p)):
            continue
        dominated = False
        for j, q in enumerate(signed):
            if j != i and not any(np.isnan(q)) and all(a >= b for a, b in zip(q, p, strict=True)) \
                    and any(a > b for a, b in zip(q, p, strict=True)):
                dominated = True
                break
        if not dominated:
            front.add(i)
    return front


def _expected_cells(smoke: SimpleNamespace) -> dict[str, dict[str, str]]:
    """The terminal figures each cell should show, computed here from the raw MLflow metrics."""
    fp32 = smoke.children["digits_cnn/fp32/torch"].data.metrics
    out = {}
    for name, run in smoke.children.items():
        m, t = run.data.metrics, run.data.tags
        source = next(s for s in ("nvml", "rapl", "estimate") if f"energy.{s}_mj_per_inference" in m)
        simulated = t["kernel"] == "simulated"
        out[name] = {
            "status": t["qbench.status"], "kernel": t["kernel"],
            "top1": f"{m['acc.top1'] * 100:.2f}",
            "delta_fp32_pt": f"{(m['acc.top1'] - fp32['acc.top1']) * 100:+.2f}",
            "acc_pct_fp32": f"{m['acc.top1'] / fp32['acc.top1'] * 100:.2f}",
            "agree_fp32": f"{m['acc.agreement_fp32'] * 100:.2f}",
            "gap_pt": f"{m['acc.gap_top1'] * 100:+.2f}" if "acc.gap_top1" in m else "—",
            "p50_ms": f"{m['latency.p50_ms']:.3f}", "p99_ms": f"{m['latency.p99_ms']:.3f}",
            "speedup": "—" if simulated else f"{fp32['latency.p50_ms'] / m['latency.p50_ms']:.2f}x",
            "throughput": f"{m['throughput.samples_per_s']:.0f}",
            "size_kib": f"{m['size.artifact_bytes'] / 1024:.1f}",
            "compression": f"{m['size.compression_ratio']:.2f}x",
            "rss_mb": f"{m['memory.peak_rss_inference_mb']:.0f}",
            "energy_mj": f"{m[f'energy.{source}_mj_per_inference']:.3g}", "energy_source": source,
            "gbops": f"{m['opcount.bops'] / 1e9:.3g}",
        }
    return out


# ------------------------------------------------------------------------------------------------ Pareto
@pytest.mark.parametrize("seed", range(6))
def test_pareto_mask_matches_brute_force(seed: int) -> None:
    from qbench.report.plots import pareto_mask

    rng = np.random.default_rng(seed)
    n, k = 40, 2 + seed % 2
    values = rng.integers(0, 6, size=(n, k)).astype(float)  # few distinct values: many ties and duplicates
    values[rng.random(n) < 0.1, 0] = np.nan
    senses = ["max", "min", "min"][:k]
    got = set(np.flatnonzero(pareto_mask(values, senses)))
    assert got == _brute_force_front([tuple(v) for v in values], senses)
    assert got  # a non-empty set of finite points always has a front


def test_pareto_ties_are_kept_and_missing_points_dropped() -> None:
    from qbench.report.plots import pareto_mask

    # (accuracy max, latency min): two identical best points, one dominated, one equal-accuracy slower, one NaN
    points = np.array([[99.0, 1.0], [99.0, 1.0], [98.0, 2.0], [99.0, 3.0], [np.nan, 0.1], [100.0, 5.0]])
    assert pareto_mask(points, ["max", "min"]).tolist() == [True, True, False, False, False, True]


def _synthetic_table() -> pd.DataFrame:
    from qbench.report.columns import COLUMNS

    rng = np.random.default_rng(7)
    rows = []
    for i, (dataset, backend, kernel) in enumerate(itertools.product(
            ["digits", "mnist"], ["torch", "onnxruntime"], ["fp32", "int8", "simulated", "mixed"])):
        rows.append({"cell": f"m{i % 3}/s{i}/{backend}", "status": "failed" if i == 5 else "finished",
                     "model": f"m{i % 3}", "dataset": dataset, "backend": backend, "scheme": f"s{i}",
                     "method": "none" if kernel == "fp32" else "ptq", "kernel": kernel,
                     "w_bits": 32.0 if kernel == "fp32" else float(rng.choice([4, 8])),
                     "top1": float(rng.choice([90.0, 95.0, 97.5])), "p50_ms": float(rng.choice([0.5, 1.0, 2.0])),
                     "size_kib": float(rng.choice([10.0, 40.0, 100.0]))})
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column.key not in table:
            table[column.key] = np.nan if column.numeric else ""
    return table


def _plotted_front(plot: Plot) -> set[tuple[float, float]]:
    from qbench.report.plots import FRONT_GID

    front = set()
    for ax in plot.figure.axes:
        for collection in ax.collections:
            if collection.get_gid() == FRONT_GID:
                front |= {(float(x), float(y)) for x, y in collection.get_offsets()}
    return front


def _expected_front(table: pd.DataFrame, x: str, exclude_simulated: bool) -> set[tuple[float, float]]:
    ok = table[(table["status"] == "finished") & table["top1"].notna() & table[x].notna()]
    if exclude_simulated:
        ok = ok[ok["kernel"] != "simulated"]
    front = set()
    for _, group in ok.groupby("dataset"):  # fronts are per dataset
        points = list(zip(group["top1"], group[x], strict=True))
        front |= {(points[i][1], points[i][0]) for i in _brute_force_front(points, ["max", "min"])}
    return front


def test_plotted_fronts_match_brute_force_on_synthetic_points() -> None:
    from qbench.report import plots

    table = _synthetic_table()
    latency = plots.accuracy_latency(table)
    size = plots.accuracy_size(table)
    assert _plotted_front(latency) == _expected_front(table, "p50_ms", exclude_simulated=True)
    assert _plotted_front(size) == _expected_front(table, "size_kib", exclude_simulated=False)
    assert not latency.points.loc[latency.points["kernel"] == "simulated", "on_front"].any()
    assert len(latency.figure.axes) == 2  # one panel per dataset
    assert "simulated" in " ".join(t.get_text() for t in latency.figure.axes[-1].get_legend().get_texts())


# ----------------------------------------------------------------------------------------------- compare
def test_compare_table_shows_the_mlflow_metrics_of_the_suite_runs(smoke: SimpleNamespace) -> None:
    from qbench.report.columns import OPTIONAL_COLUMNS, TASK_COLUMNS, TERMINAL_COLUMNS

    # image classification cells only: no task column (top-1 has its own); simulated cells only: no paired
    # speed-up, and no load scenario: those columns are left out
    keys = [k for k in TERMINAL_COLUMNS if k not in TASK_COLUMNS and k not in OPTIONAL_COLUMNS]
    out = _qbench(smoke.cwd, "compare")
    assert out.returncode == 0, out.stderr
    shown = {}
    for line in out.stdout.splitlines():
        tokens = line.split()
        if tokens and tokens[0] in SMOKE_TORCH_CELLS:
            assert len(tokens) == len(keys), line
            shown[tokens[0]] = dict(zip(keys, tokens, strict=True))
    assert set(shown) == SMOKE_TORCH_CELLS
    for name, expected in _expected_cells(smoke).items():
        assert {k: shown[name][k] for k in expected} == expected, name
    assert smoke.parent.info.run_id in out.stdout and "3 cells: 3 finished, 0 failed, 0 skipped" in out.stdout


def test_compare_csv_carries_the_exact_metrics(smoke: SimpleNamespace) -> None:
    out = _qbench(smoke.cwd, "compare", "--format", "csv", "--suite", "smoke")
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(io.StringIO(out.stdout)).set_index("cell")
    fp32 = smoke.children["digits_cnn/fp32/torch"].data.metrics
    for name, run in smoke.children.items():
        m, row = run.data.metrics, table.loc[name]
        assert row["run_id"] == run.info.run_id
        assert (row["model"], row["dataset"], row["backend"]) == ("digits_cnn", "digits", "torch")
        assert row["method"] == run.data.params["quant.method"] and row["scheme"] == run.data.tags["scheme"]
        for key, metric, scale in (("top1", "acc.top1", 100), ("p50_ms", "latency.p50_ms", 1),
                                   ("p99_ms", "latency.p99_ms", 1), ("throughput", "throughput.samples_per_s", 1),
                                   ("size_kib", "size.artifact_bytes", 1 / 1024), ("gbops", "opcount.bops", 1e-9),
                                   ("rss_mb", "memory.peak_rss_inference_mb", 1),
                                   ("compression", "size.compression_ratio", 1)):
            assert row[key] == pytest.approx(m[metric] * scale, rel=1e-12), (name, key)
        assert row["delta_fp32_pt"] == pytest.approx((m["acc.top1"] - fp32["acc.top1"]) * 100, abs=1e-9)
        assert row["disk_ratio"] == pytest.approx(fp32["size.artifact_bytes"] / m["size.artifact_bytes"])
    assert table.loc["digits_cnn/fp32/torch", "w_bits"] == 32
    assert table.loc["digits_cnn/w4-wo-pg32/torch", "w_bits"] == 4
    assert table.loc["digits_cnn/w4-wo-pg32/torch", "a_bits"] == 32  # weight-only: float activations
    assert table.loc["digits_cnn/w8a8-pc/torch", "granularity"] == "per_channel"
    assert table["speedup"].isna().tolist() == (table["kernel"] == "simulated").tolist()


def test_compare_writes_md_csv_and_html_files(smoke: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    from qbench.cli.compare import cmd_compare

    monkeypatch.chdir(smoke.cwd)
    for args, name in ((("--format", "md"), "table.md"), ((), "table.csv"), (("--format", "html"), "sub/r.html")):
        assert cmd_compare([*args, "--out", f"out/{name}"]) == 0
        assert (smoke.cwd / "out" / name).is_file() and f"wrote out/{name}" in capsys.readouterr().out
    md = (smoke.cwd / "out" / "table.md").read_text()
    assert md.startswith("| cell") and all(f"| {c}" in md for c in SMOKE_TORCH_CELLS)
    csv = pd.read_csv(smoke.cwd / "out" / "table.csv")
    assert set(csv["cell"]) == SMOKE_TORCH_CELLS and "energy_source" in csv.columns
    html = (smoke.cwd / "out" / "sub" / "r.html").read_text()
    assert html.count('src="data:image/png;base64,') == 3 and '<table id="comparison">' in html
    assert "http://" not in html and "https://" not in html  # self-contained


def test_compare_where_sort_and_all_runs(smoke: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    from qbench.cli.compare import cmd_compare

    monkeypatch.chdir(smoke.cwd)
    top1 = {name: run.data.metrics["acc.top1"] for name, run in smoke.children.items()}
    fp32 = top1["digits_cnn/fp32/torch"]
    assert cmd_compare(["--format", "csv", "--where", "acc_pct_fp32 >= 99", "--sort", "p50_ms"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert set(table["cell"]) == {n for n, v in top1.items() if v / fp32 * 100 >= 99}
    assert table["p50_ms"].is_monotonic_increasing
    assert cmd_compare(["--format", "csv", "--where", "kernel == simulated and w_bits < 8", "--sort", "top1"]) == 0
    assert pd.read_csv(io.StringIO(capsys.readouterr().out))["cell"].tolist() == ["digits_cnn/w4-wo-pg32/torch"]
    assert cmd_compare(["--format", "csv", "--sort", "top1", "--reverse", "--columns", "cell,top1"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns) == ["cell", "top1"] and table["top1"].is_monotonic_increasing
    assert cmd_compare(["--all", "--format", "csv", "--where", "speedup >= 0"]) == 0  # NaN speed-ups drop out
    assert pd.read_csv(io.StringIO(capsys.readouterr().out))["cell"].tolist() == ["digits_cnn/fp32/torch"]


@pytest.mark.parametrize("args,expected", [
    (("--sort", "speed"), "--sort: unknown column 'speed'; valid: cell, status"),
    (("--where", "accuracy >= 99"), "unknown column 'accuracy'; valid: cell, status"),
    (("--where", "top1 >= high"), "top1 is numeric, 'high' is not a number"),
    (("--columns", "cell,nope"), "--columns: unknown column 'nope'; valid: default, all, cell"),
    (("--suite", "nightly"), "no suite run of suite 'nightly'"),
    (("--experiment", "other"), "experiments in this store: Default, qbench"),
    (("--format", "pdf"), "argument --format: invalid choice: 'pdf'"),
])
def test_compare_bad_input_is_one_line_exit_2(smoke: SimpleNamespace, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture, args: tuple[str, ...],
                                              expected: str) -> None:
    from qbench.cli.compare import cmd_compare

    monkeypatch.chdir(smoke.cwd)
    assert cmd_compare(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err, err
    if "nightly" in expected:
        assert "suites in experiment 'qbench': smoke" in err


def test_compare_without_a_store_is_one_line_exit_2(run_qbench, tmp_path: Path) -> None:
    out = run_qbench("compare")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("qbench compare: no MLflow store at") and "\n" not in out.stderr.strip()
    assert "Traceback" not in out.stderr and not (tmp_path / "results").exists()


# ---------------------------------------------------------------------------------- end-of-suite report
def test_suite_report_plots_are_written_and_logged_to_the_parent_run(smoke: SimpleNamespace) -> None:
    from matplotlib.image import imread

    names = {"accuracy_latency.png", "accuracy_size.png", "accuracy_bits.png", "report.html", "comparison.csv",
             "comparison.md"}
    assert {p.name for p in smoke.report_dir.iterdir()} == names
    assert f"report: {smoke.report_dir / 'report.html'}" in smoke.stdout
    logged = {a.path for a in smoke.client.list_artifacts(smoke.parent.info.run_id, "report")}
    assert logged == {f"report/{n}" for n in names}
    for name in ("accuracy_latency.png", "accuracy_size.png", "accuracy_bits.png"):
        image = imread(smoke.report_dir / name)
        assert image.shape[0] > 300 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05 and len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 100


def test_suite_report_front_and_table_match_compare(smoke: SimpleNamespace) -> None:
    from qbench.report import compare, plots
    from qbench.report.columns import ALL_COLUMNS

    table, _ = compare.load(smoke.uri, run_id=smoke.parent.info.run_id)
    # the end-of-suite table is the one compare shows
    saved = pd.read_csv(smoke.report_dir / "comparison.csv")
    pd.testing.assert_frame_equal(saved, pd.read_csv(io.StringIO(compare.to_csv(table, ALL_COLUMNS))))
    latency, size = plots.accuracy_latency(table), plots.accuracy_size(table)
    assert _plotted_front(latency) == _expected_front(table, "p50_ms", exclude_simulated=True)
    assert _plotted_front(size) == _expected_front(table, "size_kib", exclude_simulated=False)
    assert _plotted_front(size)  # real points: the size front is never empty for finished cells
    assert set(latency.points["cell"]) == SMOKE_TORCH_CELLS  # simulated cells are drawn, only kept off the front


def test_suite_report_from_local_records_equals_the_mlflow_one(smoke: SimpleNamespace, tmp_path: Path) -> None:
    from qbench.record import read_record
    from qbench.report import build

    paths = sorted((smoke.cwd / "results" / "suites" / "smoke").glob("*/run-*/cells/*/record.json"))
    cells = [read_record(p) for p in paths]
    run_dir = paths[0].parents[2]
    tracking = SimpleNamespace(enabled=True, uri=smoke.uri)
    from_mlflow, meta = build.suite_table("smoke", cells, run_dir, smoke.parent.info.run_id, tracking)
    from_records, meta_local = build.suite_table("smoke", cells, run_dir, None, None)
    assert (meta["source"], meta_local["source"]) == ("MLflow", "local records")
    pd.testing.assert_frame_equal(from_mlflow, from_records)
    # tracking=none: the report is still written, from the records, under the run directory's name
    html = build.write_suite_report("smoke", cells, run_dir, tmp_path, None, SimpleNamespace(enabled=False))
    assert html == (tmp_path / "reports" / "smoke" / run_dir.name / "report.html").resolve() and html.is_file()


def test_a_failing_plot_only_warns(smoke: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    from qbench.record import read_record
    from qbench.report import build, plots

    def broken(table: pd.DataFrame) -> list:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "all_plots", broken)
    cells = [read_record(p) for p in (smoke.cwd / "results" / "suites").rglob("record.json")]
    assert build.write_suite_report("smoke", cells, tmp_path / "run-x", tmp_path, None, None) is None
    assert "could not write the suite report: RuntimeError: no fonts" in caplog.text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(smoke: SimpleNamespace, tmp_path: Path) -> None:
    from matplotlib.image import imread

    report = smoke.report_dir / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-images-loaded="3"' in dom  # all three embedded PNGs decoded
    main_table = dom.split('<table id="comparison">', 1)[1].split("</table>", 1)[0]
    assert sum(main_table.count(f">{c}</td>") for c in SMOKE_TORCH_CELLS) == 3
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", "--window-size=1400,2000", report.as_uri()],
                   capture_output=True, timeout=120)
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1400)
    not_white = (pixels < 0.95).any(axis=2)
    assert pixels.std() > 0.05 and not_white.mean() > 0.02
    colored = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.3  # the plots' markers, not just black text
    assert colored.sum() > 200


def test_failed_and_skipped_cells_show_their_status(smoke: SimpleNamespace) -> None:
    from qbench.cli.compare import _print_table
    from qbench.record import read_record
    from qbench.report import compare
    from qbench.report.columns import TERMINAL_COLUMNS
    from qbench.track import query

    paths = sorted((smoke.cwd / "results" / "suites" / "smoke").glob("*/run-*/cells/*/record.json"))
    cells = [read_record(p) for p in paths]
    quantized = next(c for c in cells if c["cell"] == "digits_cnn/w8a8-pc/torch")
    failed = {**quantized, "cell": "digits_cnn/w8a8-pc/torch/t1", "status": "failed", "metrics": {},
              "error": "worker crashed (signal 11)"}
    skipped = {**quantized, "cell": "digits_cnn/w4a8-pc/torch_int8", "status": "skipped", "metrics": {}, "tags": {},
               "error": "4-bit weights need a 4-bit kernel"}
    frame = query.records_frame([*cells, failed, skipped], suite_run="local")
    table = compare.comparison_table(query.with_fp32_comparisons_per_suite_run(frame)).set_index("cell")
    assert table.loc[failed["cell"], "status"] == "failed" and table.loc[skipped["cell"], "status"] == "skipped"
    assert table.loc[skipped["cell"], "scheme"] == "w4a8-pc"  # from the name: a skipped cell has no tags
    assert table.loc[[failed["cell"], skipped["cell"]], ["top1", "p50_ms", "speedup"]].isna().all().all()
    assert table.loc[failed["cell"], "note"] == "worker crashed (signal 11)"
    out = io.StringIO()
    _print_table(table.reset_index(), list(TERMINAL_COLUMNS), {"suite": "smoke"}, file=out)
    text = out.getvalue()
    assert "5 cells: 3 finished, 1 failed, 1 skipped" in text
    assert "skipped digits_cnn/w4a8-pc/torch_int8: 4-bit weights need a 4-bit kernel" in text
    row = next(line for line in text.splitlines() if line.lstrip().startswith(failed["cell"]))
    assert row.split()[1:3] == ["failed", "simulated"] and row.count("—") >= 10


def test_a_resumed_suite_shows_the_latest_run_of_each_cell() -> None:
    from qbench.track.query import latest_per_cell

    t = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame({
        "run_id": ["a", "b", "c", "d", "e"],
        "start_time": [t, t + pd.Timedelta(minutes=5), t, t + pd.Timedelta(minutes=1), t + pd.Timedelta(minutes=2)],
        "tags.mlflow.parentRunId": ["p1", "p1", "p2", None, None],  # d, e: single runs, never merged
        "tags.qbench.cell_hash": ["h1", "h1", "h1", "h1", "h1"],
        "status": ["failed", "finished", "finished", "finished", "finished"],
    })
    assert latest_per_cell(frame)["run_id"].tolist() == ["b", "c", "d", "e"]
