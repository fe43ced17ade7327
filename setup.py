"""Build step that ships ``conf/`` and ``suites/`` inside the wheel (metadata is in pyproject.toml).

The two folders stay at the top of the repository, where users read and edit them, so they are not under the
package. A wheel build copies them into ``qbench/_resources/`` (plus the git commit it was built from), where
:mod:`qbench.config.paths` finds them in a regular install. An editable install copies nothing: qbench.config.paths then
reads the checkout's own folders, so edits take effect without reinstalling. (Symlinks under the package
would need the build to follow them and break on file systems without links; a copy at build time does not.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("conf", "suites")


def _git_sha() -> str:
    if not (ROOT / ".git").exists():  # an sdist, or a copy of the tree
        return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


class BuildPyWithResources(build_py):
    """build_py, then conf/ and suites/ copied into the built package (not for editable installs)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "qbench" / "_resources"
        for name in SHIPPED:
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (target / "build.json").write_text(json.dumps({"git_sha": _git_sha()}) + "\n")


setup(cmdclass={"build_py": BuildPyWithResources})
