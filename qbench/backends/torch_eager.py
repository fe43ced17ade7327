"""Eager PyTorch: the FP32 model (``kernel: fp32``) or the fake-quant model of the scheme
(``kernel: simulated``). Simulated latency is float latency plus fake-quant overhead, never an integer
kernel's latency: qbench labels it as such and never reports a speed-up from it."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from qbench.backends.base import Backend, DeployContext, Deployment

if TYPE_CHECKING:
    from qbench.config import QBenchConfig


class TorchEagerBackend(Backend):
    name = "torch"

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        if cfg.model.source == "onnx":
            return "model=onnx is an ONNX file: the torch backends need a torch module (use backend=onnxruntime)"
        device = cfg.backend.device
        if device == "cpu":
            return None
        if not device.startswith("cuda"):
            return f"backend.device={device}: the torch backend runs on cpu or cuda[:N]"
        if not torch.cuda.is_available():
            return f"backend.device={device}: CUDA is not available on this host"
        return None

    def deploy(self, ctx: DeployContext) -> Deployment:
        from qbench.quant.simulate import weight_tensors

        device = torch.device(ctx.cfg.backend.device)
        if ctx.simulated_model is None:
            model, kernel, quantized = ctx.fp32_model, "fp32", {}
        else:
            model, kernel = ctx.simulated_model, "simulated"
            quantized = weight_tensors(model)
        if device.type != "cpu":  # a copy: the cell keeps the CPU FP32 model for its reference logits
            model = copy.deepcopy(model).to(device)
        model = model.eval()
        artifact = ctx.workdir / ("model_fp32.pt" if kernel == "fp32" else "model_quantized.pt")
        if quantized:
            # what an integer deployment stores: codes + qparams of quantized layers, other tensors as is
            blob = {f"{name}.codes": q.codes for name, q in quantized.items()}
            blob |= {f"{name}.scale": q.scale for name, q in quantized.items()}
            blob |= {f"{name}.zero_point": q.zero_point for name, q in quantized.items()}
            blob |= {k: v for k, v in model.state_dict().items() if not k.endswith(".layer.weight")}
            torch.save(blob, artifact)
        else:
            torch.save(model.state_dict(), artifact)

        @torch.inference_mode()
        def run(x: torch.Tensor) -> torch.Tensor:
            return model(x)

        sync = torch.cuda.synchronize if device.type == "cuda" else None
        return Deployment(
            kernel=kernel,
            prepare=lambda x: x.to(device).contiguous(),
            run=run,
            to_logits=lambda y: y.float().cpu(),
            artifacts=[artifact],
            tags={"device": str(device)},
            quantized_weights=quantized,
            sync=sync,
            runtime=model,
        )
