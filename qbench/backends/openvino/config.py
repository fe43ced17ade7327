"""``backend=openvino`` settings: the schema conf/backend/openvino.yaml is merged into."""

from __future__ import annotations

from dataclasses import dataclass

from qbench.config.names import (
    INT8_PATHS,
    OPENVINO_INT8_SOURCES,
    OPENVINO_PERFORMANCE_HINTS,
    OPENVINO_PRECISIONS,
)
from qbench.config.schema import BackendConfig


@dataclass
class OpenVinoConfig(BackendConfig):
    """Where the int8 model comes from, the ONNX export's opset and the CPU plugin's hints."""

    name: str = "openvino"
    onnx_opset: int = 18
    # static W8A8: qdq = qbench's QDQ ONNX model (the simulation's grid) | nncf = NNCF's own quantize()
    int8_source: str = "qdq"
    # int8 arithmetic: auto (from the CPU's ISA) | u8s8 | u8s8_reduce_range (qbench/quant/int8_path.py)
    int8_path: str = "auto"
    # PERFORMANCE_HINT of the compiled model: LATENCY (one stream) | THROUGHPUT
    performance_hint: str = "LATENCY"
    # INFERENCE_PRECISION_HINT: f32 keeps float layers in fp32 (the CPU plugin picks bf16 on AMX CPUs otherwise)
    inference_precision: str = "f32"

    def choices(self) -> dict[str, tuple[str, ...]]:
        return {"int8_source": OPENVINO_INT8_SOURCES, "int8_path": INT8_PATHS,
                "performance_hint": OPENVINO_PERFORMANCE_HINTS, "inference_precision": OPENVINO_PRECISIONS}
