"""run_cell: one cell's pipeline inside its worker process (task data -> model -> scheme -> deploy -> measure).

Order matters for honest memory figures: the peak RSS of loading and quantizing is read first, then the
peak is reset and latency is measured, so ``memory.peak_rss_inference_mb`` is the inference peak only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qbench import config as qconfig
from qbench.backends import get_backend
from qbench.backends.deployment import DeployContext, Deployment
from qbench.config import QBenchConfig, QuantConfig
from qbench.data import DataSplits
from qbench.data.batching import NamedBatch, Outputs, module_outputs
from qbench.measure import memory, size
from qbench.measure.energy import proxies, scheme_precision
from qbench.measure.env import fingerprint, host_id
from qbench.measure.latency import LatencyStats
from qbench.measure.torch_env import torch_facts
from qbench.quant import apply_scheme, int8_path
from qbench.quant.simulate import layers_named, quantized_layers, weight_tensors
from qbench.record import CellResult
from qbench.tasks import LATENCY, Task, Workload, get_task
from qbench.worker import replay
from qbench.worker.replay import ReplayedOutputs
from qbench.worker.speed import measure_load_scenario, measure_paired, measure_speed
from qbench.worker.threads import apply_threads, resolve_threads
from qbench.zoo.cache import reference_key
from qbench.zoo.models import load_fp32

log = logging.getLogger("qbench.cell")


def inject_fault(fault: str) -> None:
    """Test-only failure modes (``debug.fault``) for isolation tests."""
    if fault == "raise":
        raise RuntimeError("injected fault (debug.fault=raise)")
    if fault == "abort":
        os.abort()
    if fault == "hang":
        while True:
            time.sleep(60)


def run_cell(cfg: QBenchConfig, workdir: Path, cell_hash: str) -> CellResult:
    """Run one cell and return its result (raises on failure; the worker records it)."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t_start = time.perf_counter()
    intra, inter = resolve_threads(cfg)
    apply_threads(intra, inter)
    metrics: dict[str, float] = {"threads.intra_op": float(intra), "threads.inter_op": float(inter)}
    tags: dict[str, str] = {f"env.{k}": v for k, v in {**fingerprint(), **torch_facts()}.items()}
    tags["env.host_id"] = host_id({k[4:]: v for k, v in tags.items()})
    tags.update(threads=f"{intra}x{inter}", scheme=qconfig.scheme_label(cfg.quant))
    task = get_task(cfg.task.name, cfg.task.options)
    tags.update(task.tags())
    if cfg.suite.parallel_jobs > 1:  # other cells measured at the same time on this host
        tags["latency.contended"] = "true"

    log.info("loading data and the FP32 reference model")
    t0 = time.perf_counter()
    splits = task.splits(cfg, need_train=cfg.model.source == "reference" or cfg.quant.method == "qat")
    fp32 = load_fp32(cfg.model, cfg.dataset, splits)
    fp32_model = fp32.module
    if "eval_top1" in fp32.meta:
        metrics["reference.train_top1"] = float(fp32.meta["eval_top1"])
    for key in ("kind", "source_precision"):  # transformers models: encoder / causal_lm, e.g. gguf:Q4_1
        if key in fp32.meta:
            tags[f"model.{key}"] = str(fp32.meta[key])
    metrics.update(splits.notes)
    metrics["time.load_s"] = time.perf_counter() - t0
    assert splits.contract is not None
    tags["model.inputs"] = splits.contract.describe()
    if not splits.has_labels:
        tags["data.fill"] = splits.contract.fills()
    if fnmatch.fnmatch(qconfig.cell_name(cfg), cfg.debug.fault_on):
        inject_fault(cfg.debug.fault)

    log.info("applying scheme %s", tags["scheme"])
    t0 = time.perf_counter()
    # the scheme as deployed and simulated (e.g. 7-bit weights on the reduce-range path); names keep cfg's
    deploy_cfg, emulate, int8_tags = int8_path.for_cell(cfg)
    tags.update(int8_tags)
    if cfg.model.keep_float and fp32_model is not None:  # the model's float layers (lm_head) join the exclusions
        kept = layers_named(fp32_model, list(cfg.model.keep_float))
        tags["quant.keep_float"] = ",".join(kept)
        deploy_cfg = dataclasses.replace(deploy_cfg, quant=dataclasses.replace(
            deploy_cfg.quant, exclude=[*deploy_cfg.quant.exclude, *kept]))
    cache_key = (reference_key(cfg.model, cfg.dataset) if cfg.model.source == "reference"
                 else _text_model_key(cfg) if cfg.model.source == "hf" else None)
    # the simulation quantizes the layer types the backend does (weight-only ORT, dynamic torch: Linear only)
    layer_types = get_backend(cfg.backend.name).native_layer_types(cfg)
    if cfg.quant.method != "none":
        tags["quant.layer_types"] = ",".join(layer_types)
    simulated, scheme_stats = (apply_scheme(fp32_model, deploy_cfg.quant, splits, cache_key, emulate, layer_types)
                               if fp32_model is not None
                               else (None, {}))  # user ONNX models are quantized by ONNX Runtime alone
    metrics.update(scheme_stats)
    context = DeployContext(deploy_cfg, fp32_model, splits, workdir, simulated, fp32.onnx_path,
                            int8_path=tags.get("int8.path", "none"))
    deployment = get_backend(cfg.backend.name).deploy(context)
    metrics["time.quantize_deploy_s"] = time.perf_counter() - t0
    metrics.update(deployment.metrics)
    tags.update(deployment.tags)
    tags["kernel"] = deployment.kernel
    if not deployment.quantized_weights and simulated is not None:
        # the scheme's ideal packed size; the deployed artifact's real size is size.artifact_bytes
        deployment.quantized_weights = weight_tensors(simulated)
        if deploy_cfg.quant.weights.bits != cfg.quant.weights.bits:  # 7-bit reduce-range codes sit in int8
            for q in deployment.quantized_weights.values():
                q.storage_bits = cfg.quant.weights.bits

    metrics["memory.peak_rss_load_mb"] = memory.snapshot_mb()["peak_rss_mb"]
    peak_reset = memory.reset_peak()
    on_cuda = tags.get("device", "cpu").startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()

    artifacts: list[Path] = []
    workloads, workload_tags = task.workloads(cfg, splits)
    tags.update(workload_tags)
    timed, windows = measure_speed(deployment, workloads, cfg, on_cuda, metrics, tags)
    inference_mem = memory.snapshot_mb()
    metrics["memory.peak_rss_inference_mb"] = inference_mem["peak_rss_mb"] if peak_reset else float("nan")
    metrics["memory.rss_anon_mb"] = inference_mem["rss_anon_mb"]
    metrics["memory.rss_file_mb"] = inference_mem["rss_file_mb"]
    tags["memory.peak_split"] = "clear_refs" if peak_reset else "unavailable"
    if on_cuda:
        metrics["memory.cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    stats = timed.summary()  # after the memory snapshot: the bootstrap allocates
    metrics.update(stats.metrics("latency"))
    metrics["latency.gate_value"] = timed.gate_value
    tags["latency.unstable"] = str(stats.unstable).lower()
    _save_samples(workdir / "latency_samples.csv", stats)

    # after the memory snapshot: the FP32 reference loaded for pairing must not count in the cell's peak
    if cfg.measure.paired.enabled and cfg.quant.method != "none" and deployment.kernel != "simulated":
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=workdir) as scratch:  # the reference's artifacts are the FP32 cell's
            reference = get_backend(cfg.backend.name).deploy(DeployContext(
                dataclasses.replace(cfg, quant=QuantConfig()), fp32_model, splits, Path(scratch), None,
                fp32.onnx_path))
            paired_m, paired_t = measure_paired(deployment, reference, workloads, task.workloads(cfg, splits)[0],
                                                cfg, on_cuda)
            del reference
        metrics.update(paired_m)
        tags.update(paired_t)
        metrics["time.paired_s"] = time.perf_counter() - t0  # deploying the reference + the window

    if cfg.measure.layer_profile:
        artifacts.extend(_layer_profile(deployment, workloads, context, workdir, metrics, tags))

    if cfg.measure.scenario != "none":
        t0 = time.perf_counter()
        scenario_m, scenario_t = measure_load_scenario(deployment, workloads, splits, cfg, workdir / "loadgen",
                                                       stats.p50_ms)
        metrics.update(scenario_m)
        tags.update(scenario_t)
        metrics["time.scenario_s"] = time.perf_counter() - t0

    log.info("evaluating %s on %d samples", task.name, len(splits.evaluation))
    t0 = time.perf_counter()
    references: dict[str, Callable[[NamedBatch], Outputs]] = {"fp32": fp32.outputs}
    if simulated is not None:
        references["simulated"] = simulate_outputs(simulated)
    if cache_key is not None:  # the references' outputs are replayed from the cell that computed them first
        key = {"model": cache_key, "task": dataclasses.asdict(cfg.task), "dataset": dataclasses.asdict(cfg.dataset),
               "eval_batch_size": cfg.measure.eval_batch_size, "host": tags["env.host_id"], "threads": [intra, inter],
               "device": tags.get("device", "cpu")}
        references["fp32"] = ReplayedOutputs(fp32.outputs, replay.cache_path(key))
        if simulated is not None:
            path = replay.cache_path({**key, "simulated": simulation_identity(deploy_cfg.quant, emulate, simulated)})
            # the torch backend deploys the simulation itself: it records what the real backends' cells replay
            references["simulated"] = ReplayedOutputs(deployment if deployment.kernel == "simulated"
                                                      else references["simulated"], path, task.replay_form,
                                                      record_only=deployment.kernel == "simulated")
    metrics.update(evaluate(task, deployment, references, splits, cfg.measure.eval_batch_size))
    for role, outputs in references.items():
        if isinstance(outputs, ReplayedOutputs):
            tags[f"eval.{role}_outputs"] = "replayed" if outputs.all_replayed else "computed"
            outputs.save()
    metrics["time.accuracy_s"] = time.perf_counter() - t0
    metrics.update(_size_metrics(deployment, fp32_model))
    if fp32_model is not None:  # layer-level op counts need the torch graph
        metrics.update(_op_proxies(cfg, context, simulated))  # reduce range still runs 8-bit MACs
    metrics["time.measure_windows_s"] = windows
    metrics["time.cell_s"] = time.perf_counter() - t_start
    return CellResult(
        status="finished",
        cell=qconfig.cell_name(cfg),
        cell_hash=cell_hash,
        metrics=metrics,
        tags=tags,
        artifacts=[str(p) for p in [*deployment.artifacts, workdir / "latency_samples.csv", *artifacts]],
        started_at=started,
        ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def evaluate(task: Task, deployment: Deployment, references: dict[str, Callable[[NamedBatch], Outputs]],
             splits: DataSplits, batch_size: int) -> dict[str, float]:
    """The task's metrics of the deployed model against the FP32 reference's outputs; on real backends also
    against the simulated model of the same scheme on the same inputs (the deployment gap). A simulated cell's
    ``simulated`` reference only records its own deployed outputs (:mod:`qbench.worker.replay`)."""
    models: dict[str, Callable[[NamedBatch], Outputs]] = {"deployed": deployment, "fp32": references["fp32"]}
    simulation = references.get("simulated")
    if isinstance(simulation, ReplayedOutputs) and simulation.record_only:
        models["deployed"] = simulation
    elif simulation is not None and deployment.kernel != "simulated":
        models["simulated"] = simulation
    return task.evaluate(models, splits, batch_size)


def simulate_outputs(simulated: torch.nn.Module) -> Callable[[NamedBatch], Outputs]:
    """The simulated model as a callable from named inputs to named outputs."""

    def simulate(inputs: NamedBatch) -> Outputs:
        return module_outputs(simulated(*inputs.values()))

    return simulate


def simulation_identity(quant: QuantConfig, emulate: str | None, simulated: torch.nn.Module) -> dict[str, object]:
    """What a simulated model's outputs depend on besides the FP32 model and the data: the scheme as simulated,
    the layers it quantizes, the ISA it emulates and the simulation code's version."""
    from qbench.quant.simulate import SIMULATION_VERSION

    return {"scheme": dataclasses.asdict(quant), "layers": [layer.name for layer in quantized_layers(simulated)],
            "emulate": str(emulate), "version": SIMULATION_VERSION}


def _deployed_bytes_by_dtype(deployment: Deployment) -> dict[str, float]:
    """Weight bytes by dtype of what actually runs (torch module state, ONNX initializers)."""
    if isinstance(deployment.runtime, torch.nn.Module):
        counts = size.module_bytes_by_dtype(deployment.runtime)
    else:
        onnx_files = [p for p in deployment.artifacts if p.suffix == ".onnx"]
        counts = size.onnx_bytes_by_dtype(onnx_files[0]) if onnx_files else {}
    return {f"size.deployed_bytes.{dtype}": float(n) for dtype, n in counts.items()}


def _size_metrics(deployment: Deployment, fp32_model: torch.nn.Module | None) -> dict[str, float]:
    on_disk = size.files_nbytes(deployment.artifacts)
    deployed = _deployed_bytes_by_dtype(deployment)
    if fp32_model is None:  # a user ONNX file: only what is deployed is known
        return {"size.artifact_bytes": float(on_disk), **deployed}
    fp32_bytes = size.fp32_weight_bytes(fp32_model)
    out = {"size.fp32_weight_bytes": float(fp32_bytes), "size.artifact_bytes": float(on_disk), **deployed}
    if deployment.quantized_weights:
        packed = sum(q.packed_nbytes() for q in deployment.quantized_weights.values())
        quantized_fp32 = sum(q.numel * 4 for q in deployment.quantized_weights.values())
        model_packed = fp32_bytes - quantized_fp32 + packed
        out["size.packed_model_bytes"] = float(model_packed)
        out["size.compression_ratio"] = fp32_bytes / model_packed
        out["size.quantized_params"] = float(sum(q.numel for q in deployment.quantized_weights.values()))
        for key, value in size.code_bytes_by_bits(deployment.quantized_weights).items():
            out[f"size.weight_bytes.{key}"] = float(value)
    else:
        out["size.packed_model_bytes"] = float(fp32_bytes)
        out["size.compression_ratio"] = 1.0
    return out


def _op_proxies(cfg: QBenchConfig, context: DeployContext, simulated: torch.nn.Module | None) -> dict[str, float]:
    """MACs, BOPs and the modelled energy of the scheme (quantized layers at their bit-widths)."""
    layers = context.layer_counts()
    names = [layer.name for layer in quantized_layers(simulated)] if simulated is not None else []
    return proxies(layers, scheme_precision(cfg.quant, names), cfg.measure.energy.costs)


def _text_model_key(cfg: QBenchConfig) -> str:
    """What a transformers cell's simulated model depends on besides its scheme: the model files and the task's
    calibration text (the algorithm cache's key)."""
    import hashlib
    import json

    blob = json.dumps({"model": dataclasses.asdict(cfg.model), "dataset": dataclasses.asdict(cfg.dataset),
                       "task": dataclasses.asdict(cfg.task)}, sort_keys=True, default=str)
    return f"hf-{cfg.model.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _layer_profile(deployment: Deployment, workloads: list[Workload], context: DeployContext, workdir: Path,
                   metrics: dict[str, float], tags: dict[str, str]) -> list[Path]:
    """``measure.layer_profile``: the runtime's per-layer kernel times (µs per call) of the latency workload's
    call, written to ``layer_times.json``; a tag says why where the backend has no profile."""
    if deployment.profile_layers is None:
        tags["profile.layers"] = f"unavailable: backend {context.cfg.backend.name} has no per-layer profile"
        return []
    t0 = time.perf_counter()
    (single,) = [w for w in workloads if w.protocol == LATENCY]
    times = deployment.profile_layers(deployment.prepare(single.inputs), list(context.layer_counts()))
    path = workdir / "layer_times.json"
    path.write_text(json.dumps({"unit": "us_per_call", "batch_size": single.batch_size, "layers": times}, indent=1))
    tags["profile.layers"] = (f"{context.cfg.backend.name} profiler: median kernel time per layer, "
                              f"batch {single.batch_size}")
    metrics["profile.layers_timed"] = float(len(times))
    metrics["time.layer_profile_s"] = time.perf_counter() - t0
    return [path]


def _save_samples(path: Path, stats: LatencyStats) -> None:
    np.savetxt(path, stats.samples_ms, fmt="%.6f", header="latency_ms", comments="")
