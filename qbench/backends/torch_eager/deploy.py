"""Deployment of the ``torch`` backend. Simulated latency is float latency plus fake-quant overhead, never an
integer kernel's latency: qbench labels it as such and never reports a speed-up from it."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from qbench.backends.deployment import DeployContext, Deployment
from qbench.data.batching import Outputs, module_outputs


def deploy(ctx: DeployContext) -> Deployment:
    from qbench.quant.simulate import weight_tensors

    device = torch.device(ctx.cfg.backend.device)
    if ctx.simulated_model is None:
        model, kernel, quantized = ctx.fp32_model, "fp32", {}
    else:
        model, kernel = ctx.simulated_model, "simulated"
        quantized = weight_tensors(model)
    if device.type != "cpu":  # a copy: the cell keeps the CPU FP32 model for its reference outputs
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

    def prepare(inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(t.to(device).contiguous() for t in inputs.values())

    @torch.inference_mode()
    def run(args: tuple[torch.Tensor, ...]) -> Any:
        return model(*args)

    def outputs(result: Any) -> Outputs:
        return {name: t.float().cpu() for name, t in module_outputs(result).items()}

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return Deployment(kernel=kernel, prepare=prepare, run=run, outputs=outputs, artifacts=[artifact],
                      tags={"device": str(device)}, quantized_weights=quantized, sync=sync, runtime=model)
