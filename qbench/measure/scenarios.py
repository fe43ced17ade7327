"""MLPerf Inference load scenarios through MLCommons LoadGen (``measure.scenario``; the ``mlcommons-loadgen``
package, module ``mlperf_loadgen``).

LoadGen owns the traffic: it issues queries by the scenario's rules (SingleStream: one query after the previous
completes; MultiStream: queries of ``multi_stream_samples`` samples back to back; Server: Poisson arrivals at a
target QPS, judged on the p99 latency bound; Offline: every sample at once) with fixed seeds, times every query and
writes ``mlperf_log_summary.txt``, whose figures qbench records. The system under test is one inference worker
thread fed by a queue: LoadGen's issue callback only enqueues, so a slow model delays later queries and the
Server scenario sees real queueing, as a one-worker server would.

Server reports the highest target QPS whose run LoadGen judges VALID with the p99 latency within
``measure.server.p99_ms``: a bisection over the target QPS between 0 and 1.5x the rate one sequential worker could
sustain (1000 / single-call p50), ``measure.server.search_steps`` LoadGen runs (LoadGen's own
FindPeakPerformance mode does this too, but with its full-length runs; the bisection bounds the cost).

``measure.scenario_mode``: ``quick`` caps each LoadGen run (min 1.5 s / 200 queries, max 6 s) so that a Server
search stays under 60 s, for CI; such short runs cannot satisfy LoadGen's early-stopping criterion, so a quick
Server run counts as meeting the bound when its measured p99 is within it (LoadGen's own verdict is kept as a tag).
``full`` keeps LoadGen's own minimum durations and query counts (10 minutes a run) and its VALID verdict: the rules
of a real MLPerf run. Figures are the scenario's own: ``scenario.single_stream.p90_ms``,
``scenario.multi_stream.p99_ms``, ``scenario.server.max_qps`` (and its run's p99), ``scenario.offline.samples_per_s``.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCENARIO_NAMES = {"single_stream": "SingleStream", "multi_stream": "MultiStream", "server": "Server",
                  "offline": "Offline"}
QUICK = {"min_duration_ms": 1500, "min_query_count": 200, "max_duration_ms": 6000}


@dataclass
class LoadgenRun:
    """One LoadGen run: the scenario, its settings and the parsed summary (``key: value`` lines)."""

    scenario: str
    summary: dict[str, str]
    seconds: float

    @property
    def valid(self) -> bool:
        """LoadGen's verdict (latency bound, minimum duration and queries, early stopping)."""
        return self.summary.get("Result is", "").upper() == "VALID"

    def meets(self, bound_ms: float, quick: bool) -> bool:
        """Whether a Server run meets a p99 bound: LoadGen's verdict, or in quick mode the measured p99."""
        if not quick:
            return self.valid
        p99 = self.latency_ms("99.00")
        return p99 is not None and p99 <= bound_ms

    def number(self, key: str) -> float | None:
        try:
            return float(self.summary[key])
        except (KeyError, ValueError):
            return None

    def latency_ms(self, percentile: str) -> float | None:
        ns = self.number(f"{percentile} percentile latency (ns)")
        return None if ns is None else ns / 1e6


def parse_summary(text: str) -> dict[str, str]:
    """``mlperf_log_summary.txt`` as a dict of its ``key : value`` lines (first occurrence wins)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([^:=]+?)\s*:\s*(.+?)\s*$", line)
        if match and match.group(1) not in out:
            out[match.group(1)] = match.group(2)
    return out


def run_loadgen(infer: Callable[[Sequence[int]], None], sample_count: int, scenario: str, outdir: Path, *,
                quick: bool, settings: dict[str, Any] | None = None) -> LoadgenRun:
    """One LoadGen performance run of ``scenario`` over ``sample_count`` samples; ``infer(indices)`` runs the
    model on those samples of the evaluation split (the worker thread calls it)."""
    import mlperf_loadgen as lg

    work: queue.Queue[list[Any] | None] = queue.Queue()

    def serve() -> None:
        while (batch := work.get()) is not None:
            infer([q.index for q in batch])
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in batch])

    def issue(queries: list[Any]) -> None:
        if scenario == "offline":  # every sample at once: the worker takes them in chunks of the batch size
            step = max(1, int((settings or {}).get("offline_batch", 1)))
            for i in range(0, len(queries), step):
                work.put(queries[i:i + step])
        elif scenario == "multi_stream":
            work.put(list(queries))  # one query = multi_stream_samples samples, run as one batch
        else:
            for q in queries:
                work.put([q])

    test = lg.TestSettings()
    test.scenario = getattr(lg.TestScenario, SCENARIO_NAMES[scenario])
    test.mode = lg.TestMode.PerformanceOnly
    for key, value in {**(QUICK if quick else {}), **{k: v for k, v in (settings or {}).items()
                                                      if k != "offline_batch"}}.items():
        setattr(test, key, value)
    outdir.mkdir(parents=True, exist_ok=True)
    log_output = lg.LogOutputSettings()
    log_output.outdir = str(outdir)
    log_output.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_output
    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(sample_count, sample_count, lambda _: None, lambda _: None)
    start = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(sut, qsl, test, log_settings)
    finally:
        work.put(None)
        worker.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    summary = parse_summary((outdir / "mlperf_log_summary.txt").read_text(errors="replace"))
    return LoadgenRun(scenario, summary, time.perf_counter() - start)


def measure_scenario(infer: Callable[[Sequence[int]], None], sample_count: int, scenario: str, outdir: Path, *,
                     quick: bool, p50_ms: float, p99_bound_ms: float, search_steps: int,
                     multi_stream_samples: int = 8, offline_batch: int = 1) -> tuple[dict[str, float],
                                                                                     dict[str, str]]:
    """The scenario's figures (metrics, tags) for a model whose single-call p50 is ``p50_ms``."""
    prefix = f"scenario.{scenario}"
    mode = "quick" if quick else "full"
    tags = {"scenario": scenario, "scenario.mode": mode, "scenario.loadgen": "mlcommons-loadgen"}
    if scenario == "single_stream":
        run = run_loadgen(infer, sample_count, scenario, outdir, quick=quick,
                          settings={"single_stream_expected_latency_ns": int(p50_ms * 1e6)})
        metrics = {f"{prefix}.p90_ms": run.latency_ms("90.00"), f"{prefix}.p99_ms": run.latency_ms("99.00"),
                   f"{prefix}.qps": run.number("QPS w/o loadgen overhead")}
    elif scenario == "multi_stream":
        run = run_loadgen(infer, sample_count, scenario, outdir, quick=quick,
                          settings={"multi_stream_samples_per_query": multi_stream_samples,
                                    "multi_stream_expected_latency_ns": int(p50_ms * multi_stream_samples * 1e6)})
        metrics = {f"{prefix}.p99_ms": run.latency_ms("99.00"),
                   f"{prefix}.samples_per_query": float(multi_stream_samples)}
    elif scenario == "offline":
        run = run_loadgen(infer, sample_count, scenario, outdir, quick=quick,
                          settings={"offline_expected_qps": 1000.0 / p50_ms * max(offline_batch, 1),
                                    "offline_batch": offline_batch})
        metrics = {f"{prefix}.samples_per_s": run.number("Samples per second")}
    else:
        return _server(infer, sample_count, outdir, quick=quick, p50_ms=p50_ms, bound_ms=p99_bound_ms,
                       steps=search_steps, tags=tags)
    tags[f"{prefix}.result"] = "VALID" if run.valid else "INVALID"
    metrics[f"{prefix}.seconds"] = run.seconds
    return {k: v for k, v in metrics.items() if v is not None}, tags


def _server(infer: Callable[[Sequence[int]], None], sample_count: int, outdir: Path, *, quick: bool, p50_ms: float,
            bound_ms: float, steps: int, tags: dict[str, str]) -> tuple[dict[str, float], dict[str, str]]:
    """Bisection of the target QPS: the highest one whose Server run is VALID with p99 <= ``bound_ms``."""
    low, high = 0.0, 1.5 * 1000.0 / p50_ms
    best: LoadgenRun | None = None
    best_qps = 0.0
    seconds = 0.0
    probes: list[str] = []
    for step in range(steps):
        qps = (low + high) / 2
        run = run_loadgen(infer, sample_count, "server", outdir / f"qps_{step}", quick=quick,
                          settings={"server_target_qps": qps, "server_target_latency_ns": int(bound_ms * 1e6)})
        seconds += run.seconds
        p99 = run.latency_ms("99.00")
        probes.append(f"{qps:.1f} QPS: p99 {p99:.2f} ms" if p99 is not None else f"{qps:.1f} QPS: no p99")
        if run.meets(bound_ms, quick):
            low, best, best_qps = qps, run, qps
        else:
            high = qps
    metrics = {"scenario.server.max_qps": best_qps, "scenario.server.p99_bound_ms": bound_ms,
               "scenario.server.search_runs": float(steps), "scenario.server.seconds": seconds}
    if best is not None:
        p99 = best.latency_ms("99.00")
        if p99 is not None:
            metrics["scenario.server.p99_ms"] = p99
    tags["scenario.server.probes"] = "; ".join(probes)
    tags["scenario.server.search"] = (f"bisection of the target QPS in (0, {1.5 * 1000.0 / p50_ms:.1f}], "
                                      f"{steps} LoadGen Server runs")
    tags["scenario.server.result"] = ("no target QPS met the p99 bound" if best is None
                                      else f"LoadGen: {'VALID' if best.valid else 'INVALID'}"
                                      + ("" if best.valid or not quick else " (quick: p99 within the bound)"))
    return metrics, tags
