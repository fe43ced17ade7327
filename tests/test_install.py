"""A regular (non-editable) install works outside the checkout: conf/ and suites/ ship in the wheel, the Hydra
sweeper plugin is found, and a cell runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what a build reads; copied so the build leaves no build/ or egg-info in the checkout (an egg-info on
# PYTHONPATH would be a second qbench distribution)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "qbench", "hydra_plugins", "conf", "suites")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
         ) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_install_runs_outside_the_checkout(qbench_cache: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if not (REPO / name).exists():
            continue
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "_resources"))
        else:
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path / "dist"
    # no build isolation (it would fetch setuptools): the running environment's setuptools builds it, offline
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)], cwd=tmp_path)
    (wheel,) = dist.glob("qbench-*.whl")

    # a fresh venv gets only the wheel (pip from this environment, --python), so pip never sees the editable
    # install; the dependencies come from this environment's site-packages through a .pth added afterwards
    # (a plain path line: the editable install's own .pth there is not processed, so it cannot shadow the wheel)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], cwd=tmp_path)
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path).stdout.strip())
    (purelib / "_qbench_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "work"  # the user's folder, outside the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    env.update(QBENCH_CACHE=str(qbench_cache), COLUMNS="120")
    where = json.loads(_run([str(python), "-c", (
        "import json, qbench, hydra_plugins.qbench_sweeper as s; from qbench.config import paths;"
        "from qbench.measure.env import git_sha;"
        "print(json.dumps([qbench.__file__, s.__file__, str(paths.CONF_DIR), str(paths.PROJECT_DIR), git_sha()]))"
    )], cwd=work, env=env).stdout)
    package, plugin, conf_dir, project_dir, sha = where
    assert package.startswith(str(purelib)) and plugin.startswith(str(purelib)), where
    assert conf_dir == str(purelib / "qbench" / "_resources" / "conf") and project_dir == "None"
    assert sha == "unknown"  # built from a copy without .git; never the git sha of the folder it runs in

    qbench = str(venv / "bin" / "qbench")
    listed = _run([qbench, "ls"], cwd=work, env=env).stdout
    assert "quant: dynamic8, fp32, qat_w4a8_pc, qat_w8a8_pc, w3_g128, w4_g128," in listed
    assert "workload: minilm_similarity, smollm2_perplexity" in listed
    assert "suite: imagenet, smoke, text, vision" in listed

    # the user's ./suites comes before the packaged suites (here: a narrower smoke suite); the sweeper plugin
    # of the wheel plans it
    packaged_smoke = (purelib / "qbench" / "_resources" / "suites" / "smoke.yaml").read_text()
    (work / "suites").mkdir()
    narrowed = packaged_smoke.replace("quant: fp32,w8a8_pc,w4_wo", "quant: fp32")
    (work / "suites" / "smoke.yaml").write_text(re.sub(r"(?m)^(\s*)backend: .*$", r"\1backend: torch", narrowed))
    plan = _run([qbench, "run", "+suite=smoke", "suite.dry_run=true"], cwd=work, env=env).stdout
    assert "suite smoke: 1 cells" in plan and "digits_cnn/fp32/torch" in plan

    _run([qbench, "run", "measure=quick"], cwd=work, env=env)
    (record_path,) = work.glob("results/runs/*/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "finished" and record["tracking"]["synced"], record.get("error")
    assert record["metrics"]["acc.top1"] > 0.9
    print(f"wheel build, install and runs: {time.monotonic() - t0:.1f} s")
