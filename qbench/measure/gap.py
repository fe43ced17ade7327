"""The deployment-gap verdict: does a cell on a real backend score what its simulation (fake-quant of the same
scheme, same inputs) promised, and if not, what is the likely cause.

A real-backend cell records ``acc.top1_simulated``, ``acc.gap_top1`` (deployed - simulated top-1, fraction) and
``acc.agreement_simulated`` (share of samples whose deployed and simulated predictions agree). A gap is the
backend's doing, not the scheme's cost: on an AVX2-only EPYC, resnet18 W8A8 deployed on u8×s8 int8 kernels
scored 94.72 % against 99.7 % simulated, because without VNNI the u8×s8 pairwise products saturate in int16.

The thresholds live in :class:`qbench.config.CheckConfig` (``suite.check``: ``deployment_gap_pt``,
``min_agreement_simulated``); the summary table, ``qbench compare``, the HTML report and ``qbench check`` all
judge through :func:`deployment_gap`. Importable without torch (reports and checks never load it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from qbench.config import CheckConfig
from qbench.measure.kernel_rule import MIN_INTEGER_SHARE, integer_share
from qbench.metrics import as_number

# x86 ISA flags (as env.cpu.isa lists them) with an int8 dot product that accumulates u8×s8 in int32 directly
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# x86 int8 paths that, lacking VNNI, multiply u8×s8 pairs with vpmaddubsw into saturating int16
X86_INT8_FLAGS = frozenset({"avx2", "avx512bw", "avx512f"})
# int8.path values (set by the backends) whose products cannot saturate in int16
SAFE_INT8_PATHS = frozenset({"u8s8_reduce_range", "u8u8"})
INTEGER_KERNELS = frozenset({"int8", "mixed"})
# the metrics and tags a verdict reads (snapshots and tests keep exactly these)
METRICS = ("acc.top1", "acc.top1_simulated", "acc.gap_top1", "acc.agreement_simulated", "acc.sqnr_vs_simulated_db",
           "opmix.integer_mac_share", "opmix.integer_op_share")
TAGS = ("kernel", "env.cpu.isa", "int8.kernel_isa", "int8.path", "int8.path_reason", "quant.target_isa", "opmix.ops")
# int8.kernel_isa (qbench/quant/int8_path.py): the ISA class the backend's kernels use, e.g. "avx2 (FBGEMM_ENABLE_
# INSTRUCTIONS=AVX2)" on a VNNI host told to run fbgemm's AVX2 kernels
SATURATING_KERNEL_ISAS = ("avx2", "avx512")
_EPS = 1e-9  # a figure equal to its threshold passes


@dataclass(frozen=True)
class GapVerdict:
    """Deployed vs simulated for one cell. ``checked``: the cell has simulation figures (a real backend ran a
    simulated scheme); only then can it be ``flagged``. Top-1 and agreement are fractions, the gap in points."""

    checked: bool
    flagged: bool = False
    top1: float | None = None
    top1_simulated: float | None = None
    gap_pt: float | None = None
    agreement: float | None = None
    sqnr_db: float | None = None
    breaches: tuple[str, ...] = ()
    cause: str = ""

    @property
    def figures(self) -> str:
        """``deployed 94.72 % vs simulated 99.72 % (-5.00 pt), agreement 95.10 %``."""
        parts = []
        if self.top1 is not None and self.top1_simulated is not None:
            parts.append(f"deployed {self.top1 * 100:.2f} % vs simulated {self.top1_simulated * 100:.2f} %"
                         + (f" ({self.gap_pt:+.2f} pt)" if self.gap_pt is not None else ""))
        if self.agreement is not None:
            parts.append(f"agreement with the simulation {self.agreement * 100:.2f} %")
        return ", ".join(parts) or "no simulation figures"

    @property
    def explanation(self) -> str:
        """The figures, what was breached and the likely cause, in one line (the figures alone when not
        flagged)."""
        if not self.flagged:
            return self.figures
        return f"{self.figures}; flagged: {', '.join(self.breaches)}; likely cause: {self.cause}"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) and value.strip() not in ("nan", "None") else ""


def likely_cause(metrics: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
    """The likely cause of a deployment gap from what the cell recorded: the int8 path on this CPU's ISA, the
    op mix, else unknown. Several can hold; they are joined with ``; ``."""
    causes = []
    kernel = _text(tags.get("kernel"))
    isa_text = _text(tags.get("env.cpu.isa"))
    isa = {f for f in isa_text.split(",") if f and f != "none"}
    path = _text(tags.get("int8.path"))
    target = _text(tags.get("quant.target_isa"))
    host_vnni = bool(isa & VNNI_FLAGS)
    kernel_isa = _text(tags.get("int8.kernel_isa"))
    if kernel_isa:  # what the kernels ran, which can differ from the host's flags (an fbgemm ISA override)
        saturating = kernel_isa.split(" ")[0] in SATURATING_KERNEL_ISAS
        where = f"int8.kernel_isa={kernel_isa}"
    else:
        saturating = bool(isa & X86_INT8_FLAGS) and not host_vnni
        where = f"env.cpu.isa={isa_text}"
    if kernel in INTEGER_KERNELS and saturating and path not in SAFE_INT8_PATHS:
        what = f"int8 path {path}" if path else "int8 path not recorded (u8s8, full range, by default)"
        text = (f"{what} on a CPU without VNNI ({where}): u8×s8 pairwise products saturate in "
                f"int16 — use backend.int8_path=auto or u8s8_reduce_range")
        reason = _text(tags.get("int8.path_reason"))
        causes.append(text + (f" (int8.path_reason: {reason})" if reason else ""))
    if target and target.lower() not in ("auto", "host", "native", "any") and isa:
        target_vnni = any(s in target.lower() for s in ("vnni", "amx"))
        if target_vnni != host_vnni:
            causes.append(f"the simulation targeted quant.target_isa={target} but the cell ran on a CPU "
                          f"{'with' if host_vnni else 'without'} VNNI (env.cpu.isa={isa_text})")
    # below the share that makes a kernel "int8", the op mix is named as a cause
    share, basis = integer_share(metrics)
    if share is not None and share < MIN_INTEGER_SHARE:
        ops = _text(tags.get("opmix.ops"))
        causes.append(f"op mix: only {share:.0%} of {basis} run in integer kernels" + (f" ({ops})" if ops else ""))
    return "; ".join(causes) or "unknown: compare per-layer outputs of the deployed and the simulated model"


def check_settings_of(record: Mapping[str, Any]) -> CheckConfig:
    """The check thresholds a cell ran with (``suite.check`` of its record's resolved config; defaults if absent)."""
    check = ((record.get("config") or {}).get("suite") or {}).get("check") or {}
    return CheckConfig(**{f.name: check[f.name] for f in fields(CheckConfig) if f.name in check})


def deployment_gap(metrics: Mapping[str, Any], tags: Mapping[str, Any],
                   settings: CheckConfig | None = None) -> GapVerdict:
    """Flag a cell whose deployed top-1 falls more than ``settings.deployment_gap_pt`` points below its
    simulation's, or whose agreement with the simulation is below ``settings.min_agreement_simulated``.

    ``metrics``/``tags`` are a cell's (record or MLflow run); ``settings`` defaults to :class:`CheckConfig`'s.
    Cells without simulation figures (FP32, simulated kernels, user ONNX models) are never flagged."""
    settings = settings or CheckConfig()
    top1_sim = as_number(metrics.get("acc.top1_simulated"))
    gap = as_number(metrics.get("acc.gap_top1"))
    agreement = as_number(metrics.get("acc.agreement_simulated"))
    kernel = _text(tags.get("kernel"))
    if kernel in ("simulated", "fp32") or (top1_sim is None and gap is None and agreement is None):
        return GapVerdict(checked=False)
    gap_pt = gap * 100 + 0.0 if gap is not None else None  # + 0.0: no "-0.00"
    breaches = []
    max_gap, min_agreement = settings.deployment_gap_pt, settings.min_agreement_simulated
    if gap_pt is not None and -gap_pt > max_gap + _EPS:
        breaches.append(f"gap below -{max_gap:g} pt")
    if agreement is not None and agreement < min_agreement - _EPS:
        breaches.append(f"agreement below {min_agreement * 100:g} %")
    return GapVerdict(checked=True, flagged=bool(breaches), top1=as_number(metrics.get("acc.top1")),
                      top1_simulated=top1_sim, gap_pt=gap_pt, agreement=agreement,
                      sqnr_db=as_number(metrics.get("acc.sqnr_vs_simulated_db")), breaches=tuple(breaches),
                      cause=likely_cause(metrics, tags) if breaches else "")


def split_row(row: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics and tags a verdict reads, from an MLflow-shaped row (``metrics.*``, ``tags.*`` columns, as
    :mod:`qbench.track.query` builds them); missing and NaN values are left out."""
    metrics = {k: v for k in METRICS if (v := as_number(row.get(f"metrics.{k}"))) is not None}
    tags = {k: v for k in TAGS if (v := _text(row.get(f"tags.{k}")))}
    if not tags.get("kernel") and _text(row.get("kernel")):
        tags["kernel"] = _text(row.get("kernel"))
    return metrics, tags
