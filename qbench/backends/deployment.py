"""What a backend's ``deploy`` gets (:class:`DeployContext`) and returns (:class:`Deployment`): worker side.

A deployment runs a batch of the model's named inputs and returns its named outputs; what the outputs mean
(class scores, embeddings, token logits) is the task's business (qbench/tasks), never the backend's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from qbench.config import QBenchConfig
    from qbench.data import DataSplits
    from qbench.data.batching import Outputs
    from qbench.measure.opcount import LayerCount
    from qbench.quant.affine import QuantizedTensor


@dataclass
class DeployContext:
    """Everything a backend may need to build its artifact for one cell."""

    cfg: QBenchConfig
    # None for a user ONNX model (then onnx_path is the FP32 reference)
    fp32_model: nn.Module | None
    splits: DataSplits
    workdir: Path
    # the scheme applied in simulation (fake-quant, calibrated / QAT-trained); None for FP32 cells
    # and for user ONNX models (quantized by ONNX Runtime alone)
    simulated_model: nn.Module | None = None
    onnx_path: Path | None = None
    # the int8 path resolved for this cell (qbench/quant/int8_path.py); cfg.quant is already adjusted to it
    int8_path: str = "none"

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._layers: dict[str, LayerCount] | None = None

    def int8_stored_weights(self) -> dict[str, QuantizedTensor]:
        """Static W<8 A8 deployed as int8: the simulation's codes, each stored in an int8 (so the packed size
        counts 8 bits, as the artifact does); empty otherwise (the pipeline then takes the simulation's own)."""
        from dataclasses import replace

        from qbench.quant.simulate import weight_tensors

        q = self.cfg.quant
        if q.method not in ("ptq", "qat") or q.weights.bits >= 8 or self.simulated_model is None:
            return {}
        return {name: replace(t, storage_bits=8) for name, t in weight_tensors(self.simulated_model).items()}

    def layer_counts(self) -> dict[str, LayerCount]:
        """MACs of the FP32 model's compute layers (empty for ONNX-only models), computed once per cell."""
        if self._layers is None:
            from qbench.measure.opcount import count_layers

            example = tuple(t[:1] for t in self.splits.evaluation.tensors[:-1])  # one sample of every input
            self._layers = {} if self.fp32_model is None else count_layers(self.fp32_model, example)
        return self._layers


@dataclass
class Deployment:
    """A deployed artifact that runs batches of named inputs.

    ``prepare`` converts named inputs (torch tensors in the model's feeding order) to the runtime's native
    feed once, outside the timing loop; ``run`` executes one inference on it (what latency windows time);
    ``outputs`` converts what ``run`` returned to named CPU tensors, in the model's output order.
    """

    kernel: str
    prepare: Callable[[Mapping[str, torch.Tensor]], Any]
    run: Callable[[Any], Any]
    outputs: Callable[[Any], Outputs]
    artifacts: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    quantized_weights: dict[str, QuantizedTensor] = field(default_factory=dict)
    # called after each timed call so asynchronous devices are measured correctly (CUDA)
    sync: Callable[[], None] | None = None
    # the object that runs (torch module, ORT session), for inspection
    runtime: Any = None
    # per-layer kernel time (µs per call) from the runtime's own profiler, for a prepared feed and qbench's layer
    # names (``measure.layer_profile``); None where the backend has no per-layer profile
    profile_layers: Callable[[Any, list[str]], dict[str, float]] | None = None

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        """Named outputs for a batch of named inputs (prepare, run, read back)."""
        return self.outputs(self.run(self.prepare(inputs)))
