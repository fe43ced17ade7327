"""run_cell: one cell's pipeline inside its worker process (data -> model -> scheme -> deploy -> measure).

Order matters for honest memory figures: the peak RSS of loading and quantizing is read first, then the
peak is reset and latency is measured, so ``memory.peak_rss_inference_mb`` is the inference peak only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from qbench import config as qconfig
from qbench.backends import DeployContext, Deployment, get_backend
from qbench.config import QBenchConfig
from qbench.data import DataSplits, load_splits
from qbench.data.batching import as_batch, chunked
from qbench.measure import accuracy, memory, size
from qbench.measure.energy import measure_window, proxies, scheme_precision, window_metrics
from qbench.measure.env import fingerprint, host_id
from qbench.measure.latency import (
    LatencyStats,
    TimedSamples,
    cuda_event_call,
    measure_latency,
    wall_clock_call,
)
from qbench.measure.torch_env import torch_facts
from qbench.quant import apply_scheme, int8_path
from qbench.quant.simulate import quantized_layers, weight_tensors
from qbench.record import CellResult
from qbench.worker.threads import apply_threads, resolve_threads
from qbench.zoo.cache import reference_key
from qbench.zoo.models import FP32Model, load_fp32

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
    if cfg.suite.parallel_jobs > 1:  # other cells measured at the same time on this host
        tags["latency.contended"] = "true"

    log.info("loading data and the FP32 reference model")
    t0 = time.perf_counter()
    splits = load_splits(cfg.dataset, cfg.model, need_train=cfg.model.source == "reference" or
                         cfg.quant.method == "qat")
    fp32 = load_fp32(cfg.model, cfg.dataset, splits)
    fp32_model = fp32.module
    if "eval_top1" in fp32.meta:
        metrics["reference.train_top1"] = float(fp32.meta["eval_top1"])
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
    cache_key = reference_key(cfg.model, cfg.dataset) if cfg.model.source == "reference" else None
    simulated, scheme_stats = (apply_scheme(fp32_model, deploy_cfg.quant, splits, cache_key, emulate)
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

    timed, windows = _measure_speed(deployment, splits, cfg, on_cuda, metrics, tags)
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

    log.info("evaluating accuracy on %d samples", len(splits.evaluation))
    t0 = time.perf_counter()
    metrics.update(_accuracy(deployment, fp32, simulated, splits, cfg.measure.eval_batch_size))
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
        artifacts=[str(p) for p in deployment.artifacts] + [str(workdir / "latency_samples.csv")],
        started_at=started,
        ended_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _measure_speed(deployment: Deployment, splits: DataSplits, cfg: QBenchConfig, on_cuda: bool,
                   metrics: dict[str, float], tags: dict[str, str]) -> tuple[TimedSamples, float]:
    """Latency (batch ``latency.batch_size``, or the model's fixed batch), throughput and the energy window;
    returns the raw latency samples and the total seconds spent inside measurement windows."""
    lat_cfg = cfg.measure.latency
    fixed = splits.fixed_batch
    batch_size = fixed or lat_cfg.batch_size
    tags["latency.batch_source"] = "model" if fixed else "config"
    if fixed and fixed != lat_cfg.batch_size:
        log.info("the model's batch dimension is fixed at %d: latency batch %d (not measure.latency.batch_size=%d)",
                 fixed, fixed, lat_cfg.batch_size)
    prepared = deployment.prepare(splits.evaluation_inputs(batch_size))

    def call() -> object:
        return deployment.run(prepared)

    log.info("measuring latency")
    t0 = time.perf_counter()
    timed_call = cuda_event_call(call) if on_cuda else wall_clock_call(call, deployment.sync)
    timed = measure_latency(timed_call, lat_cfg)
    windows = time.perf_counter() - t0
    metrics["time.latency_window_s"] = windows
    metrics["latency.batch_size"] = float(batch_size)
    tags["latency.timer"] = "cuda_events" if on_cuda else "perf_counter_ns"
    tags["latency.stability_metric"] = lat_cfg.stability_metric
    if lat_cfg.throughput_batch_size > 0 and fixed:
        # the only batch the model runs is the latency batch, already measured
        tags["throughput.skipped"] = f"the model's batch dimension is fixed at {fixed}: the latency batch"
    elif lat_cfg.throughput_batch_size > 0:
        t0 = time.perf_counter()
        metrics.update(_throughput(deployment, splits, cfg, on_cuda))
        metrics["time.throughput_window_s"] = time.perf_counter() - t0
        windows += metrics["time.throughput_window_s"]
    energy_cfg = cfg.measure.energy
    if energy_cfg.duration_s > 0:
        window = measure_window(call, energy_cfg.duration_s, use_gpu=on_cuda, sync=deployment.sync)
        window_m, window_t = window_metrics(window, energy_cfg.cpu_watts_per_core)
        metrics.update(window_m)
        tags.update(window_t)
        windows += window.seconds
    return timed, windows


def _throughput(deployment: Deployment, splits: DataSplits, cfg: QBenchConfig, on_cuda: bool
                ) -> dict[str, float]:
    """Samples/s at the throughput batch size (shorter protocol: a tenth of the calls)."""
    lat_cfg = cfg.measure.latency
    batch_size = lat_cfg.throughput_batch_size
    prepared = deployment.prepare(splits.evaluation_inputs(batch_size))
    short = dataclasses.replace(lat_cfg, min_calls=max(5, lat_cfg.min_calls // 10), retries=0)

    def call() -> object:
        return deployment.run(prepared)

    timed_call = cuda_event_call(call) if on_cuda else wall_clock_call(call, deployment.sync)
    samples = measure_latency(timed_call, short).samples_ms
    p50 = float(np.median(samples))
    return {
        "throughput.samples_per_s": batch_size / (p50 / 1000.0),
        "throughput.batch_size": float(batch_size),
        "throughput.p50_ms": p50,
    }


@torch.inference_mode()
def _accuracy(deployment: Deployment, fp32: FP32Model, simulated: torch.nn.Module | None,
              splits: DataSplits, batch_size: int) -> dict[str, float]:
    """Accuracy and fidelity to FP32; on real backends also the deployment gap: the simulated model of the
    same scheme on the same inputs, and how often deployed and simulated predictions agree. A model with a
    fixed batch runs in chunks of that batch (the last one padded, its padded outputs dropped)."""
    outputs, references, simulated_out, labels = [], [], [], []
    gap = simulated is not None and deployment.kernel != "simulated"
    fixed = splits.fixed_batch
    for *inputs, y in splits.loader("evaluation", batch_size):
        x = as_batch(inputs)
        outputs.append(chunked(deployment.logits, x, fixed))
        references.append(chunked(fp32.logits, x, fixed))
        if gap:
            simulated_out.append(simulated(x))
        labels.append(y)
    out, ref, lab = torch.cat(outputs), torch.cat(references), torch.cat(labels)
    metrics = accuracy.accuracy_metrics(out, lab if splits.has_labels else None, ref)
    if gap:
        sim = torch.cat(simulated_out)
        if splits.has_labels:
            metrics["acc.top1_simulated"] = accuracy.topk_accuracy(sim, lab, 1)
            metrics["acc.gap_top1"] = metrics["acc.top1"] - metrics["acc.top1_simulated"]
        metrics["acc.agreement_simulated"] = float((out.argmax(1) == sim.argmax(1)).float().mean())
        metrics["acc.sqnr_vs_simulated_db"] = accuracy.sqnr_db(sim, out)
    return metrics


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


def _save_samples(path: Path, stats: LatencyStats) -> None:
    np.savetxt(path, stats.samples_ms, fmt="%.6f", header="latency_ms", comments="")
