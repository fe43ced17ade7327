"""Hydra discovers sweepers only under the ``hydra_plugins`` namespace: this registers qbench's suite
sweeper as ``hydra/sweeper=qbench`` (the implementation lives in :mod:`qbench.suite`).

No ``from __future__ import annotations`` here: Hydra loads plugin modules outside sys.modules, where
dataclasses cannot resolve string annotations."""


from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from qbench.orchestrate.suite import SuiteSweeper


class QBenchSweeper(SuiteSweeper):
    """Runs a qbench suite: validated grid + FP32 references, resume, parent MLflow run, summary."""


@dataclass
class QBenchSweeperConf:
    _target_: str = "hydra_plugins.qbench_sweeper.qbench_sweeper.QBenchSweeper"
    # grid: {key: "a,b,c"} exactly like Hydra's basic sweeper
    params: dict[str, str] | None = None
    # cells handed to the launcher at once (null: one at a time for the basic launcher, all for others)
    max_batch_size: int | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="qbench", node=QBenchSweeperConf, provider="qbench")
