"""FP32 models of every source: qbench's trained references, torchvision models, user checkpoints and
user ONNX files, behind one interface (:class:`FP32Model`).

Missing or mismatching files are reported by :func:`check_model` *before* any work starts (one line: what
is missing, where it was expected, how to provide it), so no partial record is ever written for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qbench.data.batching import Outputs, module_outputs
from qbench.data.splits import DataSplits


class ModelUnavailable(Exception):
    """A model's weights or file cannot be found or do not fit (one-line message, exit status 2)."""


@dataclass
class FP32Model:
    """The FP32 reference of a cell: a torch module, or (for user ONNX files) an ONNX Runtime session."""

    module: nn.Module | None
    onnx_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    _session: Any = None

    def outputs(self, inputs: Mapping[str, torch.Tensor]) -> Outputs:
        """The model's named outputs for a batch of named inputs (feeding order), like a deployment's."""
        if self.module is not None:
            with torch.inference_mode():
                return module_outputs(self.module(*inputs.values()))
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.onnx_path), providers=["CPUExecutionProvider"])
        # ORT lists the graph's non-initializer inputs in graph order: the contract's feeding order
        names = [i.name for i in self._session.get_inputs()]
        feed = {name: t.numpy() for name, t in zip(names, inputs.values(), strict=True)}
        outputs = [o.name for o in self._session.get_outputs()]
        return {name: torch.from_numpy(value) for name, value in zip(outputs, self._session.run(None, feed),
                                                                     strict=True)}


# ------------------------------------------------------------------------------------------ torchvision
def torchvision_weights(arch: str) -> Any:
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except ValueError as exc:
        raise ModelUnavailable(f"model.arch={arch}: torchvision has no published weights for it") from exc


def expected_weight_file(arch: str) -> tuple[Path, str]:
    """Where torch.hub keeps the standard weights of ``arch`` (TORCH_HOME), and their URL."""
    weights = torchvision_weights(arch)
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1], weights.url


def _torchvision_model(cfg: Any) -> nn.Module:
    import torchvision

    if cfg.pretrained:
        weights = torchvision_weights(cfg.arch)
        path, url = expected_weight_file(cfg.arch)
        if not path.is_file() and not cfg.allow_download:
            raise ModelUnavailable(_missing_weights_message(cfg.arch, path, url))
        model = torchvision.models.get_model(cfg.arch, weights=weights)  # reads TORCH_HOME's file
    else:
        model = torchvision.models.get_model(cfg.arch, weights=None, num_classes=cfg.num_classes)
    return model.eval()


def _missing_weights_message(arch: str, path: Path, url: str) -> str:
    return (f"pretrained weights for {arch} not found: expected {path} (TORCH_HOME); download {url} to that "
            "path, or set model.allow_download=true on a machine with internet access")


# ------------------------------------------------------------------------------------------- checkpoints
def build_arch(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    """A torchvision architecture by name, or ``package.module:Class`` called with ``num_classes``."""
    if ":" in arch:
        module_name, _, attr = arch.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelUnavailable(f"model.arch={arch}: cannot import {attr} from {module_name} ({exc})") from None
        return factory(num_classes=num_classes)
    from qbench.zoo.architectures import build_architecture

    try:
        return build_architecture(arch, in_channels, num_classes)
    except (ValueError, TypeError) as exc:
        raise ModelUnavailable(f"model.arch={arch}: {exc}") from None


def load_checkpoint(cfg: Any) -> nn.Module:
    """``torch.load(weights_only=True)`` of a state dict (or {"state_dict"|"model": ...}) into ``cfg.arch``."""
    path = Path(cfg.path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelUnavailable(f"model.path={path}: not a loadable PyTorch state dict ({str(exc).splitlines()[0]})"
                               ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelUnavailable(f"model.path={path}: holds a {type(state).__name__}, not a state dict")
    model = build_arch(cfg.arch, cfg.num_classes, cfg.in_channels)
    result = model.load_state_dict(state, strict=False)
    expected = model.state_dict()
    mismatched = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if result.missing_keys or result.unexpected_keys or mismatched:
        raise ModelUnavailable(_mismatch_message(path, cfg.arch, result.missing_keys, result.unexpected_keys,
                                                 mismatched))
    return model.eval()


def _mismatch_message(path: Path, arch: str, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} keys of another shape: {few(shapes)}")
    return f"model.path={path} does not match model.arch={arch}: " + "; ".join(parts)


# ------------------------------------------------------------------------------------------ entry points
def check_model(cfg: Any) -> str | None:
    """Why the model of ``cfg`` (a ModelConfig) cannot be loaded here, or None; cheap, no training."""
    if cfg.source == "torchvision":
        import torchvision

        if cfg.arch not in torchvision.models.list_models(module=torchvision.models):
            valid = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
            return f"model.arch={cfg.arch}: not a torchvision classification model (e.g. {valid}, ...)"
        if cfg.pretrained:
            try:
                path, url = expected_weight_file(cfg.arch)
            except ModelUnavailable as exc:
                return str(exc)
            if not path.is_file() and not cfg.allow_download:
                return _missing_weights_message(cfg.arch, path, url)
    elif cfg.source == "hf":
        from qbench.zoo.hf import check_hf_model

        return check_hf_model(cfg)
    elif cfg.source in ("checkpoint", "onnx"):
        if not cfg.path:
            return f"model.path is required for model source {cfg.source}"
        if not Path(cfg.path).is_file():
            return f"model.path={cfg.path}: no such file"
        if cfg.source == "checkpoint":
            try:
                load_checkpoint(cfg)
            except ModelUnavailable as exc:
                return str(exc)
        else:
            try:
                from qbench.data.onnx_inputs import onnx_contract

                onnx_contract(cfg)
            except Exception as exc:  # InputError, or a file onnx cannot parse
                return str(exc).splitlines()[0]
    return None


def load_fp32(model_cfg: Any, dataset_cfg: Any, splits: DataSplits | None = None, show_progress: bool = False
              ) -> FP32Model:
    """The cell's FP32 reference model."""
    source = model_cfg.source
    if source == "reference":
        from qbench.zoo.reference import load_reference

        module, meta = load_reference(model_cfg, dataset_cfg, splits, show_progress=show_progress)
        return FP32Model(module, meta=meta)
    if source == "torchvision":
        return FP32Model(_torchvision_model(model_cfg), meta={"pretrained": model_cfg.pretrained})
    if source == "checkpoint":
        return FP32Model(load_checkpoint(model_cfg), meta={"path": model_cfg.path})
    if source == "onnx":
        return FP32Model(None, onnx_path=Path(model_cfg.path), meta={"path": model_cfg.path})
    if source == "hf":
        from qbench.zoo.hf import load_hf

        module, meta = load_hf(model_cfg)
        return FP32Model(module, meta=meta)
    raise ModelUnavailable(f"model.source={source}: unknown")
