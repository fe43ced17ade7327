"""Scale-out: a real MLflow tracking server shared by parallel workers (Hydra's joblib launcher), nothing
lost while the server is down (`qbench sync`, exactly once), and the file-locked model cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` (SQLite backend, local artifact store) on 127.0.0.1:port, started on demand."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "w")  # noqa: SIM115 - kept open for the server's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
        raise TimeoutError(f"mlflow server did not answer on {self.uri}")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=30)

    def runs(self) -> list:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.uri)
        experiment = client.get_experiment_by_name("qbench")
        return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path / "mlflow-server", _free_port())
    yield srv
    srv.stop()


def _children(runs: list) -> tuple[list, list]:
    parents = [r for r in runs if r.data.tags.get("qbench.role") == "suite"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.mark.slow  # 20-60 s: keeps the default run near 15 min on 2 cores (pytest -m slow runs it)
def test_joblib_workers_log_to_one_server_under_one_parent(run_qbench, server, tmp_path) -> None:
    server.start()
    out = run_qbench("run", "+suite=smoke", "backend=torch", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "tracking=server", f"tracking.uri={server.uri}", timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "latency.contended=true" in out.stdout  # the warning about parallel cells on one host
    parents, children = _children(server.runs())
    assert len(parents) == 1 and len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.data.tags["latency.contended"] == "true" for c in children)
    # each cell ran in its own joblib worker process, which spawned its own measuring worker
    assert len({c.data.tags["env.host"] for c in children}) == 1


def test_server_down_nothing_lost_then_sync_exactly_once(run_qbench, server, tmp_path) -> None:
    out = run_qbench("run", "+suite=smoke", "backend=torch", "tracking=server", f"tracking.uri={server.uri}",
                     timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "3 record(s) are not in MLflow" in out.stdout and "qbench sync" in out.stdout
    records = [json.loads(p.read_text()) for p in tmp_path.glob("results/suites/*/*/run-*/cells/*/record.json")]
    assert len(records) == 3 and all(not r["tracking"]["synced"] for r in records)
    assert all(r["status"] == "finished" for r in records)

    server.start()
    first = run_qbench("sync")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "synced 3 record(s); 0 already in MLflow; 1 suite parent run(s) created; 0 failed" in first.stdout
    parents, children = _children(server.runs())
    assert len(parents) == 1 and len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.info.run_name for c in children) == sorted(r["cell"] for r in records)

    second = run_qbench("sync")
    assert second.returncode == 0 and "synced 0 record(s)" in second.stdout
    assert len(server.runs()) == 4  # nothing uploaded twice


@pytest.mark.slow  # 20-60 s: keeps the default run near 15 min on 2 cores (pytest -m slow runs it)
def test_sync_does_not_duplicate_a_run_whose_record_was_not_marked(run_qbench, server, tmp_path) -> None:
    """A sync interrupted after creating the run but before marking the record must not upload it again."""
    out = run_qbench("run", "quant=fp32", "measure=quick", "tracking=server", f"tracking.uri={server.uri}")
    assert out.returncode == 0
    (path,) = tmp_path.glob("results/runs/*/record.json")
    server.start()
    assert run_qbench("sync").returncode == 0
    record = json.loads(path.read_text())
    record["tracking"]["synced"] = False  # as if the process died right after log_record
    path.write_text(json.dumps(record))
    again = run_qbench("sync")
    assert "synced 0 record(s); 1 already in MLflow" in again.stdout
    assert len(server.runs()) == 1


def test_concurrent_first_use_trains_once(tmp_path: Path) -> None:
    script = (
        "from qbench.cli import compose; from qbench import config as c;"
        "from qbench.zoo.reference import load_reference;"
        "cfg = c.validate(compose(['model=digits_cnn', 'model.recipe.epochs=2']));"
        "m, meta = load_reference(cfg.model, cfg.dataset, show_progress=False); print(meta['trained_by_pid'])"
    )
    env = {**os.environ, "QBENCH_CACHE": str(tmp_path / "fresh-cache")}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [int(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    assert outputs[0] == outputs[1] and outputs[0] in {p.pid for p in procs}
    assert len(list((tmp_path / "fresh-cache" / "models").glob("*/model.pt"))) == 1


def test_algorithm_cache_evicts_least_recently_used_within_its_budget(tmp_path) -> None:
    """GPTQ/AWQ results of an LLM are ~1.2 GB each: the folder keeps within its budget, dropping the entries used
    longest ago, never the one just written and never one whose lock another process holds."""
    import os
    import subprocess
    import sys

    from qbench.storage import evict_least_recent, file_lock, touch

    files = []
    for name in ["a", "b", "c", "d"]:
        f = tmp_path / f"{name}.pt"
        f.write_bytes(b"x" * 100)
        files.append(f)
    a, b, c, d = files
    for age, f in enumerate([c, b, a, d]):  # c oldest, then b, a, d
        os.utime(f, (1000 + age, 1000 + age))
    touch(a)  # a cache hit makes "a" the most recent
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from qbench.storage import file_lock; "
                             f"lock = file_lock(__import__('pathlib').Path({str(c.with_suffix(''))!r})); "
                             "lock.acquire(); print('held', flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "held"
        deleted = evict_least_recent(tmp_path, max_bytes=300, pattern="*.pt", keep=d)
    finally:
        held.kill()
    # c is the oldest but locked by the other process (skipped); b goes; a was just used, d just written
    assert deleted == [b] and not b.exists()
    assert c.exists() and d.exists() and a.exists()
    with file_lock(c.with_suffix("")):
        pass  # the other process is gone: the lock is free again
    assert evict_least_recent(tmp_path, max_bytes=200, pattern="*.pt", keep=d) == [c]
