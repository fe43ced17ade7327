"""The text suite's figures: `qbench run +suite=text` timed, and its cells as the two tables of RESULTS.md.

Runs the suite warm (a first run fills the caches unless ``--results`` points at a finished suite run, which is
read instead of running anything) and writes, per model, the task metric and its change vs FP32, the simulated
figure beside the deployed one, the latency of the task's workload (decode per token for the causal LM, one word
per call for the encoder) with its CI, tokens/s, and the paired speed-up vs FP32 on the same backend.

    python benchmarks/text_suite.py [--results results/suites/text/HASH/run-...] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import machine_line, markdown_table, run_qbench, write_section


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("cells/*/record.json"))]


def _speedup(m: dict) -> str:
    if "speedup.paired" not in m:
        return ""
    return f"{m['speedup.paired']:.2f}x [{m['speedup.paired_ci95_low']:.2f}, {m['speedup.paired_ci95_high']:.2f}]"


def _simulated(cells: list[dict], metric: str) -> dict[str, float]:
    """Each deployed cell's simulated twin's figure (same model/task/scheme, backend torch), by cell name."""
    sims = {c["cell"].rsplit("/", 1)[0]: c["metrics"][metric] for c in cells
            if c["tags"].get("kernel") == "simulated"}
    return {c["cell"]: sims[c["cell"].rsplit("/", 1)[0]] for c in cells
            if c["tags"].get("kernel") != "simulated" and c["cell"].rsplit("/", 1)[0] in sims}


def _p50(m: dict) -> str:
    return f"{m['latency.p50_ms']:.2f} [{m['latency.ci95_low_ms']:.2f}, {m['latency.ci95_high_ms']:.2f}]"


def lm_table(cells: list[dict]) -> str:
    sims = _simulated(cells, "lm.perplexity")
    rows = [[c["cell"].split(":", 1)[1], c["tags"].get("kernel", ""), f"{c['metrics']['lm.perplexity']:.2f}",
             f"{c['metrics']['lm.delta_perplexity_pct']:+.1f} %",
             f"{sims[c['cell']]:.2f}" if c["cell"] in sims else "", _p50(c["metrics"]),
             f"{1000 / c['metrics']['latency.p50_ms']:.1f}", _speedup(c["metrics"]),
             " / ".join(f"{c['metrics'].get(f'prefill_{n}.p50_ms', float('nan')):.0f}" for n in (128, 512))]
            for c in cells]
    return markdown_table(["cell", "kernel", "perplexity", "Δ vs FP32", "simulated", "decode ms/token p50 [95 % CI]",
                           "tokens/s", "paired speed-up [CI]", "prefill 128 / 512 ms"], rows)


def embedding_table(cells: list[dict]) -> str:
    sims = _simulated(cells, "sim.spearman")
    rows = [[c["cell"].split(":", 1)[1], c["tags"].get("kernel", ""), f"{c['metrics']['sim.spearman']:.4f}",
             " / ".join(f"{c['metrics'][f'sim.delta_spearman_{s}']:+.4f}" for s in ("wordsim353", "simlex999")),
             f"{sims[c['cell']]:.4f}" if c["cell"] in sims else "", _p50(c["metrics"]), _speedup(c["metrics"])]
            for c in cells]
    return markdown_table(["cell", "kernel", "ρ", "Δρ WordSim353 / SimLex-999", "simulated ρ",
                           "p50 ms [95 % CI]", "paired speed-up [CI]"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, help="a finished text-suite run folder (nothing is run)")
    parser.add_argument("--wall-s", type=float, help="with --results: the run's wall time, if known")
    parser.add_argument("--note", default="", help="what else ran on the host, written beside the tables")
    args = parser.parse_args()
    wall = args.wall_s
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.results
        if run_dir is None:
            cwd = Path(tmp)
            run_qbench(["run", "+suite=text"], cwd)  # fills the caches (models, GGUF, GPTQ/AWQ, FP32 outputs)
            start = time.perf_counter()
            run_qbench(["run", "+suite=text", "resume=false"], cwd)
            wall = time.perf_counter() - start
            run_dir = max((cwd / "results" / "suites" / "text").glob("*/run-*"), key=lambda p: p.stat().st_mtime)
        records = _records(run_dir)
    done = [r for r in records if r["status"] == "finished"]
    status = {s: sum(r["status"] == s for r in records) for s in ("finished", "failed", "skipped")}
    lm = sorted((r for r in done if r["tags"].get("task") == "language_modeling"), key=lambda r: r["cell"])
    emb = sorted((r for r in done if r["tags"].get("task") == "embedding_similarity"), key=lambda r: r["cell"])
    starts = {r["tags"].get("worker.start") for r in done}
    wall_text = f"{wall:.0f} s ({wall / 60:.1f} min) wall" if wall else "wall time not given"
    phases = {"load": "time.load_s", "quantize + deploy": "time.quantize_deploy_s", "evaluation": "time.accuracy_s",
              "latency windows": "time.measure_windows_s", "paired windows": "time.paired_s"}
    spent = ", ".join(f"{name} {sum(r['metrics'].get(key, 0.0) for r in done):.0f} s" for name, key in phases.items())
    replayed = {role: sum(r["tags"].get(f"eval.{role}_outputs") == "replayed" for r in done)
                for role in ("fp32", "simulated")}
    where = (f"Cells' own time: {sum(r['metrics'].get('time.worker_wall_s', 0.0) for r in done):.0f} s ({spent}); "
             f"reference outputs replayed from an earlier cell: FP32 in {replayed['fp32']} cells, the simulation in "
             f"{replayed['simulated']} (qbench/worker/replay.py).")
    write_section(
        "text_suite", "Text suite: SmolLM2-135M and all-MiniLM-L6-v2 (`qbench run +suite=text`)",
        f"Machine: {machine_line(done[0])}; threads 2x1, batch 1; energy: estimate (no RAPL counter). One warm run: "
        f"{len(records)} cells, {status['finished']} finished, {status['skipped']} skipped (no kernel), "
        f"{status['failed']} failed, {wall_text}; cells started by: {', '.join(sorted(starts))}. Target: <= 10 min. "
        f"{where} {args.note}\n\n"
        f"### SmolLM2-135M-Instruct (from a Q4_1 GGUF file: `model.source_precision=gguf:Q4_1`), perplexity on "
        f"16 x 256 Lee-corpus tokens, decode = one token with a KV cache of 128\n\n{lm_table(lm)}\n\n"
        f"### all-MiniLM-L6-v2, Spearman ρ (mean of WordSim353 and SimLex-999), one word per call\n\n"
        f"{embedding_table(emb)}")


if __name__ == "__main__":
    main()
