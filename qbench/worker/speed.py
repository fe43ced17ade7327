"""Timing a deployment on its task's workloads: the single call (full latency protocol, then the energy window
on the same call), rates (samples/s at a larger batch, a shorter protocol) and the single call interleaved with
the FP32 reference's (paired speed-up, :mod:`qbench.measure.paired`)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from qbench.backends.deployment import Deployment
from qbench.config import LatencyConfig, QBenchConfig
from qbench.data import DataSplits
from qbench.data.batching import as_batch, chunked
from qbench.measure.energy import EnergyMeter, measure_window, window_metrics
from qbench.measure.latency import TimedSamples, cuda_event_call, measure_latency, wall_clock_call
from qbench.measure.paired import time_paired
from qbench.measure.scenarios import measure_scenario
from qbench.tasks import LATENCY, THROUGHPUT, Workload

log = logging.getLogger("qbench.cell")
MIN_REUSED_WINDOW_S = 0.5


def measure_speed(deployment: Deployment, workloads: list[Workload], cfg: QBenchConfig, on_cuda: bool,
                  metrics: dict[str, float], tags: dict[str, str]) -> tuple[TimedSamples, float]:
    """Latency of the task's single-call workload, its rates and the energy window; returns the raw latency
    samples and the total seconds spent inside measurement windows."""
    lat_cfg = cfg.measure.latency
    (single,) = [w for w in workloads if w.protocol == LATENCY]
    call = _call(deployment, single)
    log.info("measuring latency")
    t0 = time.perf_counter()
    meter = EnergyMeter(use_gpu=on_cuda)
    timed = measure_latency(_timed(call, deployment, on_cuda), lat_cfg, on_window=meter)
    windows = time.perf_counter() - t0
    metrics["time.latency_window_s"] = windows
    metrics["latency.batch_size"] = float(single.batch_size)
    tags["latency.window"] = lat_cfg.window
    tags["latency.window_stop"] = timed.stop
    tags["latency.timer"] = "cuda_events" if on_cuda else "perf_counter_ns"
    tags["latency.stability_metric"] = lat_cfg.stability_metric
    for workload in (w for w in workloads if w.protocol == THROUGHPUT):
        t0 = time.perf_counter()
        metrics.update(_rate(deployment, workload, lat_cfg, on_cuda))
        metrics[f"time.{workload.name}_window_s"] = time.perf_counter() - t0
        windows += metrics[f"time.{workload.name}_window_s"]
    energy_cfg = cfg.measure.energy
    if energy_cfg.duration_s > 0:
        # the latency window's own calls serve when it lasted long enough for the counters' resolution (CPU time
        # ticks at 10 ms: >= 0.5 s keeps it within 2 %); else the calls are repeated for energy.duration_s
        if meter.seconds >= min(MIN_REUSED_WINDOW_S, energy_cfg.duration_s):
            window = meter.window(len(timed.samples_ms))
            tags["energy.window"] = "latency"
        else:
            window = measure_window(call, energy_cfg.duration_s, use_gpu=on_cuda, sync=deployment.sync)
            windows += window.seconds
            tags["energy.window"] = "separate"
        window_m, window_t = window_metrics(window, energy_cfg.cpu_watts_per_core)
        metrics.update(window_m)
        tags.update(window_t)
    return timed, windows


def _call(deployment: Deployment, workload: Workload) -> Callable[[], object]:
    """One inference on the workload's inputs, converted to the runtime's feed once, outside the timing (or the
    task's own call for the workload)."""
    if workload.call is not None:
        return workload.call(deployment, workload.inputs)
    prepared = deployment.prepare(workload.inputs)

    def call() -> object:
        return deployment.run(prepared)

    return call


def _timed(call: Callable[[], object], deployment: Deployment, on_cuda: bool) -> Callable[[], float]:
    return cuda_event_call(call) if on_cuda else wall_clock_call(call, deployment.sync)


def _rate(deployment: Deployment, workload: Workload, lat_cfg: LatencyConfig, on_cuda: bool) -> dict[str, float]:
    """Samples/s at the workload's batch (shorter protocol: a tenth of the calls)."""
    # a throughput batch or a long prompt costs many single calls: a fifth of the warm-up calls (the time-based
    # warm-up still applies) and a tenth of the measured ones
    short = dataclasses.replace(lat_cfg, warmup_calls=max(2, lat_cfg.warmup_calls // 5),
                                min_calls=max(5, lat_cfg.min_calls // 10), retries=0)
    samples = measure_latency(_timed(_call(deployment, workload), deployment, on_cuda), short).samples_ms
    p50 = float(np.median(samples))
    return {
        f"{workload.name}.samples_per_s": workload.batch_size / (p50 / 1000.0),
        f"{workload.name}.batch_size": float(workload.batch_size),
        f"{workload.name}.p50_ms": p50,
    }


def measure_paired(deployment: Deployment, reference: Deployment, workloads: list[Workload],
                   reference_workloads: list[Workload], cfg: QBenchConfig, on_cuda: bool) -> tuple[dict[str, float],
                                                                                                   dict[str, str]]:
    """The single-call workload of ``deployment`` timed interleaved with the same workload on ``reference`` (the
    FP32 model deployed on the same backend, threads and batch): metrics ``speedup.paired*`` and the tags that say
    how they were obtained."""
    (single,) = [w for w in workloads if w.protocol == LATENCY]
    (ref_single,) = [w for w in reference_workloads if w.protocol == LATENCY]
    paired, lat_cfg = cfg.measure.paired, cfg.measure.latency
    log.info("timing the FP32 reference interleaved with the cell (paired speed-up)")
    result = time_paired(_timed(_call(reference, ref_single), reference, on_cuda),
                         _timed(_call(deployment, single), deployment, on_cuda),
                         block_ms=paired.block_ms, min_block_calls=paired.min_block_calls,
                         min_blocks=paired.min_blocks, max_blocks=paired.max_blocks,
                         max_duration_s=paired.max_duration_s, threshold=lat_cfg.stability_threshold,
                         warmup_calls=paired_warmup_calls(lat_cfg))
    return result.metrics(), {"speedup.paired_stop": result.stop,
                              "speedup.paired_method": "median over ABBA units of FP32/quantized ratios of block "
                                                       "medians (each block's second half); 95 % CI by batch "
                                                       "means of 4 batches (window CI: moving-block bootstrap)"}


def paired_warmup_calls(lat_cfg: LatencyConfig) -> int:
    """Warm-up calls a side before the paired window: each side's block size comes from the second half of its
    warm-up run, and 2 calls gave the second call after a switch (blocks of ~50 ms instead of 100, resnet18 ORT)."""
    return max(10, lat_cfg.warmup_calls // 5)


def measure_load_scenario(deployment: Deployment, workloads: list[Workload], splits: DataSplits, cfg: QBenchConfig,
                          outdir: Path, p50_ms: float) -> tuple[dict[str, float], dict[str, str]]:
    """``measure.scenario`` through LoadGen on the evaluation split's samples (each query runs the deployment on
    its samples, inputs converted inside the query as a server would)."""
    (single,) = [w for w in workloads if w.protocol == LATENCY]
    m = cfg.measure
    if single.call is not None:  # e.g. an LLM's decode step: a query is not one sample of the evaluation split
        return {}, {"scenario": m.scenario, "scenario.skipped": f"the task's latency workload ({single.name}) is "
                                                                 f"not a per-sample call: no LoadGen scenario"}
    inputs = splits.evaluation.tensors[:-1]

    def infer(indices: Sequence[int]) -> None:
        rows = torch.as_tensor(list(indices))
        batch = splits.named(as_batch([t[rows] for t in inputs]))
        chunked(lambda b: deployment.run(deployment.prepare(b)), batch, splits.fixed_batch)

    log.info("load scenario %s through LoadGen (%s)", m.scenario, m.scenario_mode)
    return measure_scenario(infer, len(splits.evaluation), m.scenario, outdir, quick=m.scenario_mode == "quick",
                            p50_ms=p50_ms, p99_bound_ms=m.server.p99_ms, search_steps=m.server.search_steps,
                            multi_stream_samples=m.multi_stream_samples,
                            offline_batch=max(1, m.latency.throughput_batch_size))
