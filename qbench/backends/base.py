"""The Backend protocol: what a runtime can run natively, how it deploys a scheme, how it runs a batch.

Adding a backend = one module with a :class:`Backend` subclass, registered in ``qbench.backends``.
Modules keep heavy imports (torch, onnxruntime) inside methods so capability checks stay cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from qbench.config import QBenchConfig
    from qbench.data import DataSplits
    from qbench.data.batching import Batch
    from qbench.measure.opcount import LayerCount
    from qbench.quant.affine import QuantizedTensor

KERNELS = ("fp32", "simulated", "int8", "int4", "mixed")


class UnsupportedScheme(Exception):
    """The backend cannot run this scheme natively (a cell to skip, with this reason)."""


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

    def layer_counts(self) -> dict[str, LayerCount]:
        """MACs of the FP32 model's compute layers (empty for ONNX-only models), computed once per cell."""
        if self._layers is None:
            from qbench.measure.opcount import count_layers

            self._layers = {} if self.fp32_model is None else count_layers(self.fp32_model, self.splits.input_shape)
        return self._layers


@dataclass
class Deployment:
    """A deployed artifact that can run batches.

    ``prepare`` converts a torch batch (one tensor, or a tuple with one tensor per named input) to the
    runtime's native input once (outside the timing loop), ``run`` executes one inference on it,
    ``to_logits`` converts the model's first output back for metrics.
    """

    kernel: str
    prepare: Callable[[Batch], Any]
    run: Callable[[Any], Any]
    to_logits: Callable[[Any], torch.Tensor]
    artifacts: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    quantized_weights: dict[str, QuantizedTensor] = field(default_factory=dict)
    # called after each timed call so asynchronous devices are measured correctly (CUDA)
    sync: Callable[[], None] | None = None
    # the object that runs (torch module, ORT session), for inspection
    runtime: Any = None

    def logits(self, x: Batch) -> torch.Tensor:
        return self.to_logits(self.run(self.prepare(x)))


class Backend(ABC):
    """A runtime that executes models."""

    name: str = ""

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        """Why this backend cannot run ``cfg``'s scheme natively, or None if it can."""
        return None

    @abstractmethod
    def deploy(self, ctx: DeployContext) -> Deployment:
        """Build the artifact for the cell's scheme and return a runnable deployment."""
