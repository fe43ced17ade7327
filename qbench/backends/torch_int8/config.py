"""``backend=torch_int8`` settings: the schema conf/backend/torch_int8.yaml is merged into."""

from __future__ import annotations

from dataclasses import dataclass

from qbench.config.names import INT8_PATHS, QUANTIZED_ENGINES
from qbench.config.schema import BackendConfig


@dataclass
class TorchInt8Config(BackendConfig):
    """PyTorch's quantized engine and the int8 arithmetic path."""

    name: str = "torch_int8"
    # x86 = fbgemm + oneDNN chosen per op | fbgemm | onednn
    quantized_engine: str = "x86"
    # int8 arithmetic: auto (from the CPU's ISA) | u8s8 | u8s8_reduce_range (qbench/quant/int8_path.py)
    int8_path: str = "auto"

    def choices(self) -> dict[str, tuple[str, ...]]:
        return {"quantized_engine": QUANTIZED_ENGINES, "int8_path": INT8_PATHS}
