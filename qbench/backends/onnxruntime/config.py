"""``backend=onnxruntime`` settings: the schema conf/backend/onnxruntime.yaml is merged into."""

from __future__ import annotations

from dataclasses import dataclass, field

from qbench.config.names import GRAPH_OPTIMIZATION_LEVELS, INT8_PATHS
from qbench.config.schema import BackendConfig


@dataclass
class OnnxRuntimeConfig(BackendConfig):
    """ONNX export opset, session options and ORT's quantization tools."""

    name: str = "onnxruntime"
    onnx_opset: int = 18
    # disable | basic | extended | all
    graph_optimization_level: str = "all"
    # execution providers in order, e.g. [CUDAExecutionProvider, CPUExecutionProvider]
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    # static/dynamic quantization: run ORT's quant_pre_process (shape inference + graph cleanup) first
    pre_process: bool = True
    # int8 arithmetic: auto (from the CPU's ISA) | u8s8 | u8s8_reduce_range | u8u8 (qbench/quant/int8_path.py)
    int8_path: str = "auto"

    def choices(self) -> dict[str, tuple[str, ...]]:
        return {"graph_optimization_level": GRAPH_OPTIMIZATION_LEVELS, "int8_path": INT8_PATHS}
