"""Shared fixtures: an isolated qbench cache (trained reference models reused within the session),
Hydra composition like ``qbench run`` does, and a helper that runs the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REFERENCE_MODELS = ("digits_cnn", "resnet18", "mobilenet_v2")


@pytest.fixture(scope="session")
def qbench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache dir for the test session: QBENCH_TEST_CACHE if set (reuse across sessions), else a fresh one."""
    path = Path(os.environ.get("QBENCH_TEST_CACHE") or tmp_path_factory.mktemp("qbench-cache"))
    os.environ["QBENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def compose(qbench_cache: Path) -> Callable[..., object]:
    """Compose a config exactly as ``qbench run`` does (Hydra compose API on conf/)."""
    from qbench.cli import compose as qbench_compose

    return lambda *overrides: qbench_compose(list(overrides))


@pytest.fixture(scope="session")
def reference_models(compose) -> dict[str, object]:
    """The three trained reference models (trained once per cache, loaded from it afterwards)."""
    from qbench import config as qconfig
    from qbench.zoo.reference import load_reference

    models = {}
    for name in REFERENCE_MODELS:
        cfg = qconfig.validate(compose(f"model={name}"))
        models[name] = load_reference(cfg.model, cfg.dataset, show_progress=False)[0]
    return models


@pytest.fixture()
def run_qbench(qbench_cache: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real ``qbench`` CLI in a subprocess with ``tmp_path`` as working directory."""

    def run(*args: str, timeout: float = 600, cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "QBENCH_CACHE": str(qbench_cache), "COLUMNS": "120", **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "qbench", *args], cwd=cwd or tmp_path, env=full_env, capture_output=True,
            text=True, timeout=timeout,
        )

    return run
