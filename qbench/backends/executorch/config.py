"""``backend=executorch`` settings: the schema conf/backend/executorch.yaml is merged into."""

from __future__ import annotations

from dataclasses import dataclass

from qbench.config.names import EXECUTORCH_OBSERVERS
from qbench.config.schema import BackendConfig


@dataclass
class ExecuTorchConfig(BackendConfig):
    """Whose observers calibrate the PT2E XNNPACK quantizer (static W8A8 only)."""

    name: str = "executorch"
    # qbench = quant.{weights,activations}.observer mapped to torch.ao's observers (minmax, histogram);
    # xnnpack = the XNNPACK quantizer's own defaults (HistogramObserver activations), whatever quant.* says
    observers: str = "qbench"

    def choices(self) -> dict[str, tuple[str, ...]]:
        return {"observers": EXECUTORCH_OBSERVERS}
