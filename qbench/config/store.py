"""Registration with Hydra (schema, suites, resolvers) and the options of each config group."""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from qbench.config import paths
from qbench.config.schema import QBenchConfig


def register_configs() -> None:
    """Register the schema (``qbench_schema``, first in conf/config.yaml's defaults), the suites, and
    the ``qbench.stem`` resolver (file name without suffix, e.g. a user model's name from its path)."""
    ConfigStore.instance().store(name="qbench_schema", node=QBenchConfig)
    if not OmegaConf.has_resolver("qbench.stem"):
        OmegaConf.register_new_resolver("qbench.stem", lambda path: Path(str(path)).stem)
    register_suites()


def register_suites() -> None:
    """Make every ``suites/NAME.yaml`` reachable as ``+suite=NAME`` (user's ./suites wins over qbench's)."""
    cs = ConfigStore.instance()
    seen: set[str] = set()
    for directory in paths.suite_dirs():
        for path in sorted(directory.glob("*.yaml")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            cs.store(group="suite", name=path.stem, node=OmegaConf.load(path), package="_global_")


def available_suites() -> list[str]:
    return sorted({p.stem for d in paths.suite_dirs() for p in d.glob("*.yaml")})


def group_options(group: str) -> list[str]:
    """Names of the options of a config group (YAML files in conf/<group>/, suites for ``suite``)."""
    if group == "suite":
        return available_suites()
    directory = paths.CONF_DIR / group
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
