"""``executorch``: the torch model exported (``torch.export``), lowered to ExecuTorch with the XNNPACK partitioner
(``to_edge_transform_and_lower``) and written as a ``.pte`` program, which runs through ExecuTorch's Python runtime
(``executorch.runtime``) on this CPU. ExecuTorch/XNNPACK is what phones and edge boards deploy; here it stands in
for one: **latency is ExecuTorch's runtime with XNNPACK's x86 kernels on this host, not a phone's ARM cores.**

- FP32 (``quant=fp32``): the FP32 model exported and lowered as is.
- static W8A8 (``ptq``): PT2E with ExecuTorch's ``XNNPACKQuantizer`` (``prepare_pt2e`` -> calibration on qbench's
  calibration split, ``quant.calibration.samples`` samples in batches of ``quant.calibration.batch_size`` ->
  ``convert_pt2e``) on the simulated model's float weights (BN folded), then exported and lowered the same way.
  Weights symmetric int8 in [-127, 127], per channel (``w8a8_pc``) or per tensor (``w8a8``); activations asymmetric
  int8 per tensor.
- **Integer grid: PT2E's, not qbench's.** The quantizer calibrates its own observers and places its own
  quantize/dequantize pairs (every Conv/Linear input and output, add, pooling: int8 between ops), so the deployment
  gap here includes a different calibration, as on ``openvino`` with ``int8_source=nncf`` (tag
  ``executorch.grid``). ``backend.observers``: ``qbench`` (default) maps qbench's observers onto torch.ao's —
  weights ``minmax`` -> ``MinMaxObserver`` / ``PerChannelMinMaxObserver`` (the quantizer's only weight observers;
  others are skipped), activations ``minmax`` -> ``MinMaxObserver``, ``histogram`` -> ``HistogramObserver``
  (torch.ao's L2 range search, not qbench's KL criterion), ``percentile``/``mse`` -> skipped; ``xnnpack`` uses the
  quantizer's own defaults (``HistogramObserver`` activations) whatever ``quant.*`` says (cell name ``/obs-xnnpack``).
- Skipped with the reason: W4A8 and other non-8-bit static schemes, per-group or asymmetric weights, per-channel or
  symmetric activations, QAT (qbench's learned scales do not reach the quantizer, which calibrates its own),
  dynamic int8 and weight-only (XNNPACK's dynamic/low-bit Linear paths are not wired up here; its 4-bit weights take
  dynamically quantized int8 activations, and there is no float-activation weight-only kernel for convolutions),
  GPTQ/AWQ/SmoothQuant, ``quant.exclude`` / ``quant.layers``, ONNX files and transformers models.

Recorded: the XNNPACK thread count (ExecuTorch's global threadpool, which the XNNPACK delegate runs on, reset to
``measure.threads.intra_op`` with ``portable_lib._unsafe_reset_threadpool`` before the program is loaded; tag
``executorch.threads`` is what the pool reports back), the ``.pte`` size (``size.artifact_bytes``), and the op mix
of the lowered graph: each compute op (convolution, linear/addmm/mm) is delegated to XNNPACK or not, and int8 when
its input and weight come from dequantize nodes; ``opmix.integer_*`` counts delegated int8 ops, so ``kernel`` is
int8 by the shared rule (:func:`qbench.measure.kernel_rule.integer_kernel`) only when >= 90 % of MACs run in a
delegated int8 op; ``opmix.delegated_op_share`` / ``opmix.delegated_mac_share`` is the share that went to the
delegate at all.

Capabilities here (torch-free: whether executorch is installed is looked up, not imported); deployment in ``deploy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbench.backends.base import Backend, cpu_runtime_reason, missing_packages, static_int8_reason
from qbench.config.layers import overrides

if TYPE_CHECKING:
    from qbench.config import QBenchConfig

# qbench's activation observers torch.ao has an equivalent for (backend.observers=qbench)
ACTIVATION_OBSERVERS = ("minmax", "histogram")


def missing_package() -> str | None:
    """The packages a cell needs and this environment lacks (executorch; torchao for PT2E), or None."""
    return missing_packages(("executorch", "torchao"), "executorch")


def _static_reason(cfg: QBenchConfig) -> str | None:
    return static_int8_reason(cfg, "XNNPACK's static quantized kernels") or _quantizer_reason(cfg)


def _quantizer_reason(cfg: QBenchConfig) -> str | None:
    """What the PT2E XNNPACK quantizer cannot calibrate as the scheme asks."""
    w, a = cfg.quant.weights, cfg.quant.activations
    if a.symmetric:
        return "symmetric activations: the XNNPACK quantizer calibrates asymmetric int8 activations"
    if cfg.backend.observers == "qbench":
        if w.observer != "minmax":
            return (f"weights observer {w.observer}: the XNNPACK quantizer estimates weight ranges with min/max only "
                    "(backend.observers=xnnpack calibrates with its defaults)")
        if a.observer not in ACTIVATION_OBSERVERS:
            return (f"activations observer {a.observer}: torch.ao has {', '.join(ACTIVATION_OBSERVERS)} for PT2E "
                    "(backend.observers=xnnpack calibrates with the XNNPACK quantizer's defaults)")
    return None


class ExecuTorchBackend(Backend):
    name = "executorch"
    # torch.export's lowering and the runtime: ~4 s of imports (torchao included) a cell would pay
    preload = ("executorch.exir", "executorch.runtime")

    def unsupported_reason(self, cfg: QBenchConfig) -> str | None:
        reason = cpu_runtime_reason(cfg, missing_package(), {
            "onnx": "model=onnx is an ONNX file: ExecuTorch lowers a torch module (torch.export)",
            "hf": "transformers models are not lowered to ExecuTorch by qbench yet (text runs on torch and torch_int8)",
        }, "the executorch backend runs XNNPACK on the CPU")
        q = cfg.quant
        if reason or q.method == "none":
            return reason
        if q.method == "qat":
            return ("QAT: qbench's learned scales do not reach the PT2E XNNPACK quantizer, which calibrates its own "
                    "observers (torch_int8, onnxruntime and openvino deploy QAT)")
        if q.method == "dynamic":
            return ("quant.method=dynamic: XNNPACK's dynamic int8 Linear (the quantizer's is_dynamic config) is not "
                    "wired up in qbench's executorch backend yet")
        if q.method == "weight_only":
            return (f"{q.weights.bits}-bit weight-only: XNNPACK has no weight-only kernel with float activations (its "
                    "low-bit Linear weights take dynamically quantized int8 activations; convolutions have none)")
        if q.algorithm != "rtn":
            return (f"quant.algorithm={q.algorithm}: the PT2E XNNPACK quantizer rounds the float weights itself: "
                    "torch and torch_int8 run it")
        if q.exclude or any(o and o != {"float": False} for o in overrides(q).values()):
            return "quant.exclude / quant.layers: per-layer choices are not carried into the PT2E quantizer yet"
        return _static_reason(cfg)
