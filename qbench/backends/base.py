"""What every backend answers without loading a runtime: *can I run this scheme natively?*

A backend is a package ``qbench/backends/<name>/``: its ``__init__`` holds a :class:`Backend` subclass whose
capability check the orchestrator calls (no torch, no deployment code imported: keep it that way), and its
``deploy.py`` builds and runs the artifact in the worker (``deploy(ctx) -> Deployment``,
:mod:`qbench.backends.deployment`).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from qbench.config import QBenchConfig

KERNELS = ("fp32", "simulated", "int8", "int4", "mixed")
TORCH_MODEL_NEEDED = "model=onnx is an ONNX file: the torch backends need a torch module (use backend=onnxruntime)"
HF_NOT_EXPORTED = "transformers models are not exported to ONNX by qbench yet (text runs on torch and torch_int8)"


class UnsupportedScheme(Exception):
    """The backend cannot run this scheme natively (a cell to skip, with this reason)."""


# the layer types qbench's simulation can quantize (qbench.quant.simulate.QUANTIZABLE, by name)
ALL_LAYER_TYPES = ("Conv2d", "Linear")


def missing_packages(names: Iterable[str], extra: str) -> str | None:
    """The packages of ``names`` this environment lacks, with the extra that installs them, or None."""
    absent = [name for name in names if find_spec(name) is None]
    return f"{' and '.join(absent)} not installed (pip install -e \".[{extra}]\")" if absent else None


def cpu_runtime_reason(cfg: QBenchConfig, missing: str | None, sources: dict[str, str],
                       runs_on: str) -> str | None:
    """The checks of a CPU-only runtime before its scheme: its package (``missing``: why it is absent), the model's
    source (``sources``: source -> why it cannot deploy it) and the device (``runs_on`` says what runs where)."""
    if missing:
        return missing
    if cfg.model.source in sources:
        return sources[cfg.model.source]
    if cfg.backend.device != "cpu":
        return f"backend.device={cfg.backend.device}: {runs_on}"
    return None


def static_int8_reason(cfg: QBenchConfig, kernels: str) -> str | None:
    """The first limit of a static int8 x int8 kernel library (``kernels`` names it) that ``cfg``'s scheme runs into:
    8-bit weights and activations, one weight scale per tensor or output channel, symmetric weights, one activation
    scale per tensor. The limits of XNNPACK's and OpenVINO's CPU int8 kernels alike."""
    w, a = cfg.quant.weights, cfg.quant.activations
    if w.bits != 8 or a.bits != 8:
        return f"W{w.bits}A{a.bits}: {kernels} are int8 x int8 (no other static widths)"
    if w.granularity == "per_group":
        return f"per-group weights: {kernels} take one weight scale per tensor or per output channel"
    if a.granularity != "per_tensor":
        return f"per-channel activations: {kernels} take one activation scale per tensor"
    if not w.symmetric:
        return f"asymmetric weights: {kernels} take symmetric int8 weights (no weight zero point)"
    return None


class Backend:
    """A runtime that executes models: its capabilities here, its deployment in its package's ``deploy``."""

    name: ClassVar[str] = ""
    # modules every cell of this backend imports (its runtime): the fork server of such cells imports them once
    preload: ClassVar[tuple[str, ...]] = ()

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        """Why this backend cannot run ``cfg``'s scheme natively, or None if it can."""
        return None

    def native_layer_types(self, cfg: QBenchConfig) -> tuple[str, ...]:
        """The layer types this backend quantizes for ``cfg``'s scheme; the simulation quantizes the same ones
        so that the deployment gap compares like with like (e.g. ONNX Runtime's weight-only MatMulNBits leaves
        convolutions in float)."""
        return ALL_LAYER_TYPES

    def deploy(self, ctx: Any) -> Any:
        """Build the artifact of the cell's scheme from a ``DeployContext`` and return a runnable ``Deployment``.

        The package's ``deploy`` module is imported here, by name, so that capability checks never load it."""
        return import_module(f"{type(self).__module__}.deploy").deploy(ctx)
