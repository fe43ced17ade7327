"""The :class:`Task` interface: what a cell measures a model on.

A task owns the data splits (calibration, evaluation, training when asked) with the model's input contract
(:class:`~qbench.config.inputs.InputContract` on :class:`~qbench.data.DataSplits`), its metrics (a task metric
with its direction, fidelity to FP32, the deployment gap to the simulated scheme) and its latency workloads.
Deployments and models only map named inputs to named outputs; what the outputs mean is the task's.

Importable without torch (the methods import what they need): the worker runs tasks, the orchestrator only
lists their names (:func:`qbench.config.names.task_names`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from qbench.backends.deployment import Deployment
    from qbench.config import QBenchConfig
    from qbench.data import DataSplits
    from qbench.data.batching import NamedBatch, Outputs

log = logging.getLogger("qbench.task")

# how the pipeline times a workload: the single call (full protocol: latency.* metrics, stability gate, energy
# window) or a rate (a tenth of the calls: <name>.samples_per_s, <name>.batch_size, <name>.p50_ms)
LATENCY, THROUGHPUT = "latency", "throughput"


@dataclass(frozen=True)
class Workload:
    """The inputs of one timed call and how it is timed: the one ``LATENCY`` workload's figures are ``latency.*``,
    a ``THROUGHPUT`` workload's are prefixed with its ``name``."""

    name: str
    inputs: NamedBatch
    batch_size: int
    protocol: str = LATENCY
    # a call other than one inference on ``inputs`` (e.g. a decoding step with a KV cache): built once from the
    # deployment and the inputs, outside the timing; None = the deployment's own prepare + run
    call: Callable[[Deployment, NamedBatch], Callable[[], object]] | None = None


@dataclass
class Evaluation:
    """Named outputs over the whole evaluation split, in sample order, and what scores them.

    ``simulated`` is there on real backends running a quantized scheme (the deployment gap: the fake-quant
    model of the same scheme on the same inputs); ``targets`` is None when the data has no labels (fake)."""

    deployed: Outputs
    fp32: Outputs
    simulated: Outputs | None = None
    targets: torch.Tensor | None = None


def first(outputs: Outputs) -> torch.Tensor:
    """A model's first output (by its order)."""
    return next(iter(outputs.values()))


class Task(ABC):
    """A task plug-in: subclass it in ``qbench/tasks/NAME.py`` with ``name = "NAME"``, decorate it with
    :func:`qbench.tasks.register`, and add ``conf/task/NAME.yaml``."""

    name: ClassVar[str] = ""
    # the task metric (a key of what score returns) and its direction
    metric: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    # the in-cell metric that compares the task metric with FP32's (compare's "Δ task" column), if any
    delta_metric: ClassVar[str] = ""
    # whether the metric can be computed on the first N evaluation samples (``qbench analyze --samples``); False
    # when the task scores the split as a whole (e.g. word pairs that index every word)
    subsettable: ClassVar[bool] = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})  # task.options from the config

    def option(self, key: str) -> Any:
        """``task.options.KEY`` (conf/task/NAME.yaml declares every option a task reads, with its default)."""
        if key not in self.options:
            raise KeyError(f"task.options.{key} is missing: conf/task/{self.name}.yaml declares it")
        return self.options[key]

    def splits(self, cfg: QBenchConfig, need_train: bool) -> DataSplits:
        """Calibration and evaluation splits (and the training split when ``need_train``: reference training,
        QAT) with the model's input contract. Default: the ``dataset`` group's splits, shaped for the model."""
        from qbench.data import load_splits

        return load_splits(cfg.dataset, cfg.model, need_train=need_train)

    def workloads(self, cfg: QBenchConfig, splits: DataSplits) -> tuple[list[Workload], dict[str, str]]:
        """What latency is measured on, and tags saying how it was chosen. Default: one call of
        ``measure.latency.batch_size`` evaluation samples (the model's batch when it is fixed) and a throughput
        batch of ``measure.latency.throughput_batch_size`` (none when 0 or when the model's batch is fixed)."""
        lat = cfg.measure.latency
        fixed = splits.fixed_batch
        batch = fixed or lat.batch_size
        tags = {"latency.batch_source": "model" if fixed else "config"}
        if fixed and fixed != lat.batch_size:
            log.info("the model's batch dimension is fixed at %d: latency batch %d (not measure.latency.batch_size=%d)",
                     fixed, fixed, lat.batch_size)
        workloads = [Workload(LATENCY, splits.named(splits.evaluation_inputs(batch)), batch, LATENCY)]
        if lat.throughput_batch_size > 0 and fixed:
            # the only batch the model runs is the latency batch, already measured
            tags["throughput.skipped"] = f"the model's batch dimension is fixed at {fixed}: the latency batch"
        elif lat.throughput_batch_size > 0:
            size = lat.throughput_batch_size
            workloads.append(Workload(THROUGHPUT, splits.named(splits.evaluation_inputs(size)), size, THROUGHPUT))
        return workloads, tags

    def evaluate(self, models: Mapping[str, Callable[[NamedBatch], Outputs]], splits: DataSplits,
                 batch_size: int) -> dict[str, float]:
        """Metrics of the cell. ``models`` maps ``deployed``, ``fp32`` and, for the deployment gap,
        ``simulated`` to callables from named inputs to named outputs. Default: every model's outputs over
        the evaluation split (:func:`collect`), scored by :meth:`score`."""
        return self.score(collect(models, splits, batch_size))

    def replay_form(self, inputs: NamedBatch, outputs: Outputs) -> Outputs:
        """What :meth:`evaluate` needs of a ``simulated`` model's outputs for ``inputs``, kept so that other cells
        replay it (:mod:`qbench.worker.replay`); :meth:`evaluate` must accept it as that model's outputs.
        Default: the outputs themselves."""
        return outputs

    @abstractmethod
    def score(self, ev: Evaluation) -> dict[str, float]:
        """The task metric (``self.metric``) and the others, from the evaluation split's outputs."""

    def tags(self) -> dict[str, str]:
        tags = {"task": self.name, "task.metric": self.metric,
                "task.direction": "higher" if self.higher_is_better else "lower"}
        if self.delta_metric:
            tags["task.delta_metric"] = self.delta_metric
        return tags


def collect(models: Mapping[str, Callable[[NamedBatch], Outputs]], splits: DataSplits, batch_size: int
            ) -> Evaluation:
    """Run every model over the evaluation split in batches of ``batch_size`` (chunks of the model's batch when
    it is fixed: the last one padded, its padded outputs dropped) and gather outputs and labels."""
    import torch

    from qbench.data.batching import as_batch, chunked

    gathered: dict[str, list[Outputs]] = {role: [] for role in models}
    labels = []
    with torch.inference_mode():
        for *inputs, y in splits.loader("evaluation", batch_size):
            x = splits.named(as_batch(inputs))
            for role, model in models.items():
                gathered[role].append(chunked(model, x, splits.fixed_batch))
            labels.append(y)

    def cat(parts: list[Outputs]) -> Outputs:
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    outputs = {role: cat(parts) for role, parts in gathered.items()}
    return Evaluation(deployed=outputs["deployed"], fp32=outputs["fp32"], simulated=outputs.get("simulated"),
                      targets=torch.cat(labels) if splits.has_labels else None)
