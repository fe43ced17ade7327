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
from qbench.measure import accuracy, memory, size
from qbench.measure.env import fingerprint, host_id
from qbench.measure.latency import LatencyStats, measure_latency
from qbench.quant import apply_scheme
from qbench.quant.simulate import weight_tensors
from qbench.result import CellResult
from qbench.threads import apply_threads, resolve_threads
from qbench.zoo.cache import reference_key
from qbench.zoo.reference import load_reference

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
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {f"env.{k}": v for k, v in fingerprint().items()}
    tags["env.host_id"] = host_id({k[4:]: v for k, v in tags.items()})

    log.info("loading data and the FP32 reference model")
    splits = load_splits(cfg.dataset, cfg.model)
    fp32_model, ref_meta = load_reference(cfg.model, cfg.dataset, splits, show_progress=False)
    metrics["reference.train_top1"] = float(ref_meta["eval_top1"])
    if fnmatch.fnmatch(qconfig.cell_name(cfg), cfg.debug.fault_on):
        inject_fault(cfg.debug.fault)

    log.info("applying scheme %s", qconfig.scheme_label(cfg.quant))
    t0 = time.perf_counter()
    cache_key = reference_key(cfg.model, cfg.dataset) if cfg.model.source == "reference" else None
    simulated, scheme_stats = apply_scheme(fp32_model, cfg.quant, splits, cache_key)
    metrics.update(scheme_stats)
    backend = get_backend(cfg.backend.name)
    deployment = backend.deploy(DeployContext(cfg, fp32_model, splits, workdir, simulated))
    metrics["time.quantize_deploy_s"] = time.perf_counter() - t0
    metrics.update(deployment.metrics)
    tags.update(deployment.tags)
    tags["kernel"] = deployment.kernel

    load_mem = memory.snapshot_mb()
    metrics["memory.peak_rss_load_mb"] = load_mem["peak_rss_mb"]
    peak_reset = memory.reset_peak()

    log.info("measuring latency")
    lat_cfg = cfg.measure.latency
    batch1 = splits.evaluation.tensors[0][: lat_cfg.batch_size]
    prepared = deployment.prepare(batch1)
    timed = measure_latency(lambda: deployment.run(prepared), lat_cfg, sync=deployment.sync)
    throughput = _throughput(deployment, splits, cfg) if lat_cfg.throughput_batch_size > 0 else {}
    inference_mem = memory.snapshot_mb()
    stats = timed.summary()  # after the memory snapshot: the bootstrap allocates
    metrics.update(stats.metrics("latency"))
    metrics.update(throughput)
    metrics["latency.batch_size"] = float(lat_cfg.batch_size)
    tags["latency.unstable"] = str(stats.unstable).lower()
    tags["latency.stability_metric"] = lat_cfg.stability_metric
    metrics["latency.gate_value"] = timed.gate_value
    _save_samples(workdir / "latency_samples.csv", stats)

    metrics["memory.peak_rss_inference_mb"] = inference_mem["peak_rss_mb"] if peak_reset else float("nan")
    metrics["memory.rss_anon_mb"] = inference_mem["rss_anon_mb"]
    metrics["memory.rss_file_mb"] = inference_mem["rss_file_mb"]
    tags["memory.peak_split"] = "clear_refs" if peak_reset else "unavailable"

    log.info("evaluating accuracy on %d samples", len(splits.evaluation))
    metrics.update(_accuracy(deployment, fp32_model, simulated, splits, cfg.measure.eval_batch_size))
    if not deployment.quantized_weights and simulated is not None:
        # the scheme's ideal packed size; the deployed artifact's real size is size.artifact_bytes
        deployment.quantized_weights = weight_tensors(simulated)
    metrics.update(_size_metrics(deployment, fp32_model))

    metrics["threads.intra_op"] = float(intra)
    metrics["threads.inter_op"] = float(inter)
    tags["threads"] = f"{intra}x{inter}"
    tags["scheme"] = qconfig.scheme_label(cfg.quant)
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


def _throughput(deployment: Deployment, splits: DataSplits, cfg: QBenchConfig) -> dict[str, float]:
    """Samples/s at the throughput batch size (shorter protocol: a tenth of the calls)."""
    lat_cfg = cfg.measure.latency
    batch = splits.evaluation.tensors[0][: lat_cfg.throughput_batch_size]
    prepared = deployment.prepare(batch)
    short = dataclasses.replace(lat_cfg, min_calls=max(5, lat_cfg.min_calls // 10), retries=0)
    samples = measure_latency(lambda: deployment.run(prepared), short, sync=deployment.sync).samples_ms
    p50 = float(np.median(samples))
    return {
        "throughput.samples_per_s": len(batch) / (p50 / 1000.0),
        "throughput.batch_size": float(len(batch)),
        "throughput.p50_ms": p50,
    }


@torch.inference_mode()
def _accuracy(deployment: Deployment, fp32_model: torch.nn.Module, simulated: torch.nn.Module | None,
              splits: DataSplits, batch_size: int) -> dict[str, float]:
    """Accuracy and fidelity to FP32; on real backends also the deployment gap: the simulated model of the
    same scheme on the same inputs, and how often deployed and simulated predictions agree."""
    outputs, references, simulated_out, labels = [], [], [], []
    gap = simulated is not None and deployment.kernel != "simulated"
    for x, y in splits.loader("evaluation", batch_size):
        outputs.append(deployment.logits(x))
        references.append(fp32_model(x))
        if gap:
            simulated_out.append(simulated(x))
        labels.append(y)
    out, ref, lab = torch.cat(outputs), torch.cat(references), torch.cat(labels)
    metrics = accuracy.accuracy_metrics(out, lab, ref)
    if gap:
        sim = torch.cat(simulated_out)
        metrics["acc.top1_simulated"] = accuracy.topk_accuracy(sim, lab, 1)
        metrics["acc.gap_top1"] = metrics["acc.top1"] - metrics["acc.top1_simulated"]
        metrics["acc.agreement_simulated"] = float((out.argmax(1) == sim.argmax(1)).float().mean())
        metrics["acc.sqnr_vs_simulated_db"] = accuracy.sqnr_db(sim, out)
    return metrics


def _size_metrics(deployment: Deployment, fp32_model: torch.nn.Module) -> dict[str, float]:
    fp32_bytes = size.fp32_weight_bytes(fp32_model)
    on_disk = size.files_nbytes(deployment.artifacts)
    out = {"size.fp32_weight_bytes": float(fp32_bytes), "size.artifact_bytes": float(on_disk)}
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


def _save_samples(path: Path, stats: LatencyStats) -> None:
    np.savetxt(path, stats.samples_ms, fmt="%.6f", header="latency_ms", comments="")
