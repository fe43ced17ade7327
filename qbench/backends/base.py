"""What every backend answers without loading a runtime: *can I run this scheme natively?*

A backend is a package ``qbench/backends/<name>/``: its ``__init__`` holds a :class:`Backend` subclass whose
capability check the orchestrator calls (no torch, no deployment code imported: keep it that way), and its
``deploy.py`` builds and runs the artifact in the worker (``deploy(ctx) -> Deployment``,
:mod:`qbench.backends.deployment`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from qbench.config import QBenchConfig

KERNELS = ("fp32", "simulated", "int8", "int4", "mixed")
TORCH_MODEL_NEEDED = "model=onnx is an ONNX file: the torch backends need a torch module (use backend=onnxruntime)"


class UnsupportedScheme(Exception):
    """The backend cannot run this scheme natively (a cell to skip, with this reason)."""


# the layer types qbench's simulation can quantize (qbench.quant.simulate.QUANTIZABLE, by name)
ALL_LAYER_TYPES = ("Conv2d", "Linear")


class Backend:
    """A runtime that executes models: its capabilities here, its deployment in its package's ``deploy``."""

    name: ClassVar[str] = ""

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
