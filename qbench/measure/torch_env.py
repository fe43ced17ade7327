"""What torch itself reports about this host (quantized engine, CPU capability, GPU): measuring processes only."""

from __future__ import annotations


def torch_facts() -> dict[str, str]:
    import torch

    return {
        "torch.quantized_engine": torch.backends.quantized.engine,
        "torch.cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
