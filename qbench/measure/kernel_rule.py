"""The one rule that labels a quantized deployment's ``kernel`` from its op mix (int8/int4 when at least
:data:`MIN_INTEGER_SHARE` of the work runs in integer kernels, else mixed or fp32). Torch-free: the backends,
the deployment-gap verdict and the reports all read it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qbench.metrics import as_number

MIN_INTEGER_SHARE = 0.9


def integer_share(metrics: Mapping[str, Any]) -> tuple[float | None, str]:
    """The share of the work in integer kernels and its basis: of MACs where known, else of compute ops;
    (None, "") when the op mix was not measured."""
    for name, basis in (("opmix.integer_mac_share", "MACs"), ("opmix.integer_op_share", "compute ops")):
        share = as_number(metrics.get(name))
        if share is not None:
            return share, basis
    return None, ""


def integer_kernel(metrics: Mapping[str, Any], label: str = "int8") -> str:
    """The ``kernel`` of a quantized deployment from its op mix: ``label`` (int8, int4) when at least
    :data:`MIN_INTEGER_SHARE` of the work runs in integer kernels, ``mixed`` when less does, ``fp32`` when the
    deployed graph has no integer kernel at all."""
    if not metrics.get("opmix.integer_ops"):
        return "fp32"
    share, _ = integer_share(metrics)
    return label if (share or 0.0) >= MIN_INTEGER_SHARE else "mixed"
