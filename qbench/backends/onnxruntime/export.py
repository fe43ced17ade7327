"""Export of PyTorch models to ONNX (torch.onnx's dynamo exporter), cached for the reference models.

The exported graph is the *BatchNorm-folded* model (qbench.quant.simulate.fold_batchnorm), so that every
ONNX Conv/Gemm keeps its layer's parameter names (``layer1.0.conv1.weight``): qbench maps ONNX tensors back
to layers by those names (operation counts, injected scales for QAT and MSE calibration).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from qbench.config import paths
from qbench.config.inputs import TORCH_INPUT_NAME as INPUT_NAME
from qbench.data.batching import output_names
from qbench.storage import cached, write_atomic

# the torch backends' name for a module's single output (ORT deployments answer with it whatever the file says)
OUTPUT_NAME = output_names(1)[0]


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch dimension; written atomically."""
    return write_atomic(path, lambda tmp: _export(model, input_shape, tmp, opset), suffix=".onnx")


def _export(model: nn.Module, input_shape: tuple[int, ...], tmp: Path, opset: int) -> None:
    example = (torch.zeros(2, *input_shape),)
    batch = torch.export.Dim("batch", min=1, max=4096)
    # the exporter narrates its steps on stdout: keep the worker log readable
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            model.eval(), example, str(tmp), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), external_data=False, verbose=False,
        )


def cached_reference_export(model_cfg, dataset_cfg, folded_model: Callable[[], nn.Module], input_shape: tuple[int, ...],
                            opset: int) -> Path:
    """The BN-folded FP32 export of a reference model, made once per (model, opset, torch version);
    ``folded_model`` is called only when the export is not cached yet."""
    from qbench.zoo.cache import reference_key

    version = torch.__version__.split("+")[0]
    path = paths.cache_dir() / "exports" / f"{reference_key(model_cfg, dataset_cfg)}-opset{opset}-torch{version}.onnx"
    if not path.is_file():
        cached(path, folded_model, lambda model, tmp: _export(model, input_shape, tmp, opset), lambda _: None,
               suffix=".onnx")
    return path
