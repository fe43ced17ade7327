"""Per-layer sensitivity of one cell's scheme (``qbench analyze``, in the worker: ``python -m qbench.worker
--analyze DIR``): for every quantized layer and each *kind* — its ``weights``, its input ``activations``, or the
whole ``layer`` (both) — on the simulated model of the cell's scheme:

- ``sqnr_db``: SQNR of the layer's output with that kind quantized vs float, on the calibration inputs the float
  network feeds it;
- ``metric_quantized``: the task metric with *only* that kind of that layer quantized (the rest float);
- ``metric_float``: the task metric with *only* that kind of that layer kept float (the rest quantized).

From them, in the task's direction (``task.higher_is_better``): ``drop`` = how much worse than FP32 the metric is
with only that part quantized, ``recovery`` = how much better than the fully quantized model it is with only that
part float. Ranking rule (most sensitive first): ``drop + recovery`` of the whole-layer kind — the damage the layer
does alone plus what keeping it float buys back — ties broken by the lower SQNR. With ``--max-layers N`` only the N
layers of lowest whole-layer SQNR (the cheap pass, always run for every layer) get the metric evaluations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from qbench import config as qconfig
from qbench.backends import get_backend
from qbench.data import DataSplits
from qbench.data.batching import NamedBatch, Outputs, module_outputs
from qbench.quant import apply_scheme
from qbench.quant.simulate import QuantizedLayer, layers_named, quantized_layers
from qbench.storage import write_json_atomic
from qbench.tasks import Task, get_task
from qbench.worker.threads import apply_threads, resolve_threads
from qbench.zoo.cache import reference_key
from qbench.zoo.models import load_fp32

log = logging.getLogger("qbench.analyze")
KINDS = ("weights", "activations", "layer")
RANKING_RULE = ("drop (metric worse than FP32 with only the layer quantized) + recovery (metric better than the "
                "quantized model with only the layer float), whole layer; ties: lower SQNR first")
_PARTS = {"weights": ("weights",), "activations": ("activations",), "layer": ("weights", "activations")}


class Switches:
    """Turns the quantization of each layer's weights and input activations on or off (float = off) in place;
    :meth:`only` restores the scheme when it is left."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.layers = {layer.name: layer for layer in quantized_layers(model)}
        self.saved = {name: (layer.weight_spec, layer.input_quantizer) for name, layer in self.layers.items()}

    def set(self, name: str, weights: bool, activations: bool) -> None:
        layer, (spec, iq) = self.layers[name], self.saved[name]
        layer.weight_spec = spec if weights else None  # QuantizedLayer.weight(): the float weight without a spec
        layer.input_quantizer = iq if activations else None

    @contextlib.contextmanager
    def only(self, quantized: bool, name: str | None = None, kind: str = "layer") -> Iterator[None]:
        """Every layer quantized (``quantized``) or float, except ``kind`` of layer ``name``, which is the opposite."""
        try:
            for other in self.layers:
                self.set(other, quantized, quantized)
            if name is not None:
                parts = _PARTS[kind]
                self.set(name, quantized != ("weights" in parts), quantized != ("activations" in parts))
            yield
        finally:
            for other in self.layers:
                self.set(other, True, True)


class _Replay:
    """The FP32 model's outputs, computed on the first evaluation and replayed call by call on the next ones."""

    def __init__(self, compute: Callable[[NamedBatch], Outputs]) -> None:
        self.compute, self.saved, self.index = compute, [], 0

    def __call__(self, inputs: NamedBatch) -> Outputs:
        if self.index < len(self.saved):
            out = self.saved[self.index]
        else:
            out = self.compute(inputs)
            self.saved.append(out)
        self.index += 1
        return out


@torch.no_grad()
def layer_sqnr(model: torch.nn.Module, switches: Switches, batches: list[Any]) -> dict[tuple[str, str], float]:
    """SQNR (dB) of each layer's output with each kind quantized vs float, on the inputs the float network feeds
    the layer (every other layer float)."""
    sums: dict[tuple[str, str], list[float]] = {}

    def hook(layer: QuantizedLayer, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        x = args[0]
        for kind, parts in _PARTS.items():
            if kind == "activations" and switches.saved[layer.name][1] is None:
                continue  # no input quantizer (weight-only): nothing to measure
            switches.set(layer.name, "weights" in parts, "activations" in parts)
            noise = (layer.forward(x) - output).float()  # forward(): no hooks, no recursion
            switches.set(layer.name, False, False)
            acc = sums.setdefault((layer.name, kind), [0.0, 0.0])
            acc[0] += float(output.float().pow(2).sum())
            acc[1] += float(noise.pow(2).sum())

    handles = [layer.register_forward_hook(hook) for layer in switches.layers.values()]
    try:
        with switches.only(False):
            for batch in batches:
                model(*((batch,) if isinstance(batch, torch.Tensor) else tuple(batch)))
    finally:
        for handle in handles:
            handle.remove()
    return {key: 10 * math.log10(s / n) if n > 0 else math.inf for key, (s, n) in sums.items()}


def analyze(task: Task, simulated: torch.nn.Module, fp32: Callable[[NamedBatch], Outputs], splits: DataSplits,
            batch_size: int, calibration: list[Any], max_layers: int | None = None) -> dict[str, Any]:
    """The sensitivity table of ``simulated`` (see the module docstring) with the reference metrics."""
    switches = Switches(simulated)
    replay = _Replay(fp32)

    def deployed(inputs: NamedBatch) -> Outputs:
        return module_outputs(simulated(*inputs.values()))

    def metric() -> float:
        replay.index = 0
        return float(task.evaluate({"deployed": deployed, "fp32": replay}, splits, batch_size)[task.metric])

    sign = 1.0 if task.higher_is_better else -1.0
    with switches.only(False):
        float_metric = metric()
    quantized_metric = metric()
    sqnr = layer_sqnr(simulated, switches, calibration)
    names = list(switches.layers)
    by_sqnr = sorted(names, key=lambda n: sqnr.get((n, "layer"), math.inf))  # a layer calibration never ran: last
    scored = set(by_sqnr[:max_layers] if max_layers else names)
    rows = []
    for i, name in enumerate(names):
        for kind in (k for k in KINDS if (name, k) in sqnr):  # weight-only: no activations rows
            row: dict[str, Any] = {"layer": name, "kind": kind, "type": type(switches.layers[name].layer).__name__,
                                   "sqnr_db": sqnr[(name, kind)]}
            if name in scored:
                with switches.only(False, name, kind):
                    row["metric_quantized"] = metric()
                with switches.only(True, name, kind):
                    row["metric_float"] = metric()
                row["drop"] = sign * (float_metric - row["metric_quantized"])
                row["recovery"] = sign * (row["metric_float"] - quantized_metric)
            rows.append(row)
        log.info("layer %d/%d %s: SQNR %.1f dB", i + 1, len(names), name, sqnr.get((name, "layer"), math.inf))
    return {"metric": task.metric, "higher_is_better": task.higher_is_better, "float_metric": float_metric,
            "quantized_metric": quantized_metric, "layers": len(names), "layers_scored": len(scored),
            "ranking": rank([r for r in rows if r["kind"] == "layer"]), "ranking_rule": RANKING_RULE, "rows": rows}


def rank(layer_rows: list[dict[str, Any]]) -> list[str]:
    """Layer names, most sensitive first (:data:`RANKING_RULE`); layers without metrics last, by SQNR."""
    def key(row: dict[str, Any]) -> tuple[float, float]:
        score = row["drop"] + row["recovery"] if "drop" in row else -math.inf
        return -score, row["sqnr_db"]

    return [row["layer"] for row in sorted(layer_rows, key=key)]


def subset_evaluation(splits: DataSplits, samples: int | None) -> DataSplits:
    """The first ``samples`` evaluation samples (all when None or more than there are)."""
    if not samples or samples >= len(splits.evaluation):
        return splits
    return dataclasses.replace(splits, evaluation=TensorDataset(*(t[:samples] for t in splits.evaluation.tensors)))


def run_analysis(cfg: qconfig.QBenchConfig, options: dict[str, Any]) -> dict[str, Any]:
    """Load the cell's model and data, build its simulated scheme, and analyze it (what ``--analyze`` writes)."""
    t0 = time.perf_counter()
    apply_threads(*resolve_threads(cfg))
    if cfg.quant.method == "none":
        raise ValueError("quant.method=none: nothing is quantized, there is no sensitivity to analyze")
    task = get_task(cfg.task.name, cfg.task.options)
    splits = task.splits(cfg, need_train=cfg.model.source == "reference" or cfg.quant.method == "qat")
    fp32 = load_fp32(cfg.model, cfg.dataset, splits)
    if fp32.module is None:
        raise ValueError("a user ONNX model has no torch layers to analyze (qbench analyze needs a torch model)")
    quant = cfg.quant
    if cfg.model.keep_float:
        quant = dataclasses.replace(quant, exclude=[*quant.exclude, *layers_named(fp32.module, cfg.model.keep_float)])
    cache_key = reference_key(cfg.model, cfg.dataset) if cfg.model.source == "reference" else None
    layer_types = get_backend(cfg.backend.name).native_layer_types(cfg)
    simulated, _ = apply_scheme(fp32.module, quant, splits, cache_key, None, layer_types)
    assert simulated is not None
    if task.subsettable:
        splits = subset_evaluation(splits, options.get("samples"))
    samples = min(quant.calibration.samples, len(splits.calibration))
    calibration = splits.calibration_inputs(samples, quant.calibration.batch_size)
    log.info("analyzing %d layers of %s on %d evaluation samples", len(quantized_layers(simulated)),
             qconfig.cell_name(cfg), len(splits.evaluation))
    result = analyze(task, simulated, fp32.outputs, splits, cfg.measure.eval_batch_size, calibration,
                     options.get("max_layers"))
    result.update(cell=qconfig.cell_name(cfg), scheme=qconfig.scheme_label(cfg.quant), task=task.name,
                  evaluation_samples=len(splits.evaluation), calibration_samples=samples,
                  time_s=time.perf_counter() - t0)
    return result


def main(workdir: Path, cfg_node: Any) -> int:
    """``--analyze DIR``: DIR/config.yaml + DIR/options.json in, DIR/analysis.json out."""
    cfg = qconfig.validate(cfg_node)
    options = json.loads((workdir / "options.json").read_text()) if (workdir / "options.json").is_file() else {}
    write_json_atomic(workdir / "analysis.json", run_analysis(cfg, options))
    return 0
