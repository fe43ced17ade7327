"""The end of ``qbench tune``: choose the best measured configuration, write and print the outputs, close the
MLflow parent run, and return the exit status (0 the budget is met, 1 it is not)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from qbench import config as qconfig
from qbench.orchestrate.tune import Candidate, TuneSession
from qbench.orchestrate.tune_search import exhaustive_size


def _row(c: Candidate | None, record: dict[str, Any], figures: dict[str, Any], budget: float) -> dict[str, Any]:
    drop = figures["drop"]
    algorithm = ((record.get("config") or {}).get("quant") or {}).get("algorithm") if c else ""
    size = figures["size_bytes"]
    return {"cell": record["cell"], "move": c.move if c else "fp32", "algorithm": algorithm, "k": c.k if c else "",
            "layers": ",".join(c.layers) if c else "", "metric": figures["metric"], "drop": drop,
            "meets": None if c is None else drop is not None and drop <= budget, "p50_ms": figures["p50_ms"],
            "speedup": figures["speedup"], "speedup_ci": figures.get("speedup_ci"),
            "size_kib": None if size is None else size / 1024, "bops": figures["bops"], "kernel": figures["kernel"],
            "status": record["status"]}


def _speedup_text(figures: dict[str, Any]) -> str:
    """``; 1.20x FP32 [1.16, 1.25] (paired)``, or the unpaired ratio where no paired window was measured."""
    value, ci = figures.get("speedup"), figures.get("speedup_ci")
    if value is None:
        return ""
    return f"; {value:.2f}x FP32" + (f" [{ci[0]:.2f}, {ci[1]:.2f}] (paired)" if ci else " (unpaired p50s)")


def best_candidate(candidates: list[Candidate], budget: float, objective: str) -> tuple[Candidate | None, bool]:
    """The best measured candidate for ``objective`` (a figure name) within the budget (True), else the one that
    misses it by the least (False); fewer layers moved break ties."""
    measured = [c for c in candidates if c.finished and c.figures["drop"] is not None]
    feasible = [c for c in measured if c.figures["drop"] <= budget]
    if feasible:
        from qbench.report.tune import MAXIMIZED

        sign = -1.0 if objective in MAXIMIZED else 1.0

        def cost(c: Candidate) -> tuple[float, int]:
            value = c.figures[objective]
            return (math.inf if value is None else sign * float(value)), c.k

        return min(feasible, key=cost), True
    return (min(measured, key=lambda c: (c.figures["drop"], c.k)) if measured else None), False


def finish(ns: Any, session: TuneSession, moves: dict[str, dict[str, Any]], ranking: list[str],
           analysis: dict[str, Any], cfg: qconfig.QBenchConfig, workdir: Path, parent: str | None, console: Any,
           capped: bool, elapsed_s: float) -> int:
    from qbench.report import tune as out

    reference = session.reference or {}
    ref_figures = session.figures(reference)
    rows = [_row(None, reference, ref_figures, ns.max_drop)]
    rows += [_row(c, c.record, c.figures, ns.max_drop) for c in session.candidates]
    table = out.frame(rows, analysis["higher_is_better"])
    best, met = best_candidate(session.candidates, ns.max_drop, out.OBJECTIVES[ns.objective])
    unit = "%" if ns.relative else "pt"
    metric = ref_figures["metric_name"]
    layers, count = len(ranking), len(moves)
    algorithms = [cfg.quant.algorithm, *getattr(ns, "algorithm_variants", [])]
    per_algorithm = f" per algorithm, x {len(algorithms)} algorithms ({', '.join(algorithms)})" if len(
        algorithms) > 1 else ""
    prefixes, exhaustive = (count * layers + 1) * len(algorithms), exhaustive_size(layers, count) * len(algorithms)
    space = (f"{prefixes} prefixes of the ranking ({count} move(s) x {layers} layers + the base scheme"
             f"{per_algorithm}), {exhaustive} configurations for exhaustive search over the same layers "
             f"({count + 1}^{layers}: each layer kept or given one of {', '.join(moves)}{per_algorithm})")
    name = qconfig.cell_name(cfg)
    if best is None:
        verdict = "no candidate could be measured (see the failed cells above)"
    elif met:
        verdict = (f"budget met: {best.record['cell']} ({best.move} on the top {best.k} layers) drops "
                   f"{best.figures['drop']:+.2f} {unit} <= {ns.max_drop:g} {unit}; best for {ns.objective}"
                   + _speedup_text(best.figures))
    else:
        verdict = (f"no candidate meets the budget: the best found, {best.record['cell']} ({best.move} on the top "
                   f"{best.k} layers), drops {best.figures['drop']:+.2f} {unit}, missing it by "
                   f"{best.figures['drop'] - ns.max_drop:.2f} {unit}")
    from qbench.cli.tune import PROFILE_OVERRIDE

    # the profile serves the latency stage only: the configuration to run is the candidate's own
    command = out.run_command([o for o in best.overrides if o != PROFILE_OVERRIDE]) if best else ""
    summary = {"cell": name, "verdict": verdict, "met": met, "budget": ns.max_drop, "unit": unit,
               "relative": ns.relative, "metric": metric, "fp32_metric": ref_figures["metric"],
               "backend": cfg.backend.name, "objective": ns.objective, "moves": moves, "ranking": ranking,
               "measured": len(session.candidates), "prefix_space": prefixes, "algorithms": algorithms,
               "exhaustive_space": exhaustive, "space": space, "capped": capped,
               "best_label": "none" if best is None else f"{best.record['cell']}: {best.move} on "
               f"{', '.join(best.layers) or 'no layer'}" + (f" ({best.algorithm})" if best.algorithm else ""),
               "best": None if best is None else {
                   "cell": best.record["cell"], "move": best.move, "k": best.k, "layers": best.layers,
                   "algorithm": best.algorithm or cfg.quant.algorithm,
                   **{k: v for k, v in best.figures.items() if k != "error"}},
               "command": command, "time_s": elapsed_s, "parent_run_id": parent}
    files = _write(workdir, summary, table, best, name, metric, session)
    console.print(f"{name}: measured candidates (FP32 {metric} {ref_figures['metric']:.4f} on {cfg.backend.name})",
                  highlight=False, markup=False)
    out.print_table(table, metric, unit, console)
    console.print(f"measured candidates: {len(session.candidates)} (plus FP32); search space: {space}"
                  + (" — stopped at --max-candidates" if capped else ""), highlight=False, markup=False,
                  soft_wrap=True)
    if best is not None:
        console.print(f"best configuration: {summary['best_label']}\n  preset: {workdir / 'quant_tuned.yaml'}\n"
                      f"  run it: {command}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"written: {workdir} (candidates.csv, pareto.png, report.md, tune.json); {elapsed_s:.0f} s",
                  highlight=False, markup=False, soft_wrap=True)
    _close_parent(cfg, parent, summary, table, files)
    print(f"qbench tune: {verdict}", file=sys.stdout if met else sys.stderr)
    return 0 if met else 1


def _write(workdir: Path, summary: dict[str, Any], table: Any, best: Candidate | None, name: str, metric: str,
           session: TuneSession) -> list[Path]:
    from qbench.cli.tune import write_json
    from qbench.report import tune as out

    table.to_csv(workdir / "candidates.csv", index=False)
    (workdir / "pareto.png").write_bytes(out.pareto_png(table, metric, f"qbench tune: {name}"))
    write_json(workdir / "tune.json", {**summary, "candidates": table.to_dict(orient="records")})
    (workdir / "report.md").write_text(out.markdown(summary, table))
    files = [workdir / n for n in ("candidates.csv", "pareto.png", "tune.json", "report.md")]
    if best is not None:
        quant = best.record.get("config", {}).get("quant", {})
        out.write_preset(workdir / "quant_tuned.yaml", quant, summary["verdict"], summary["command"])
        (workdir / "run_command.txt").write_text(summary["command"] + "\n")
        files += [workdir / "quant_tuned.yaml", workdir / "run_command.txt"]
    return files


def _close_parent(cfg: qconfig.QBenchConfig, parent: str | None, summary: dict[str, Any], table: Any,
                  files: list[Path]) -> None:
    if parent is None:
        return
    from qbench.track.tune import close_tune_run

    best = summary["best"] or {}
    metrics = {"tune.measured": summary["measured"], "tune.prefix_space": summary["prefix_space"],
               "tune.exhaustive_space": float(summary["exhaustive_space"]), "tune.met": float(summary["met"]),
               "tune.time_s": summary["time_s"]}
    metrics.update({f"tune.best_{k}": v for k, v in best.items() if k in ("k", "drop", "p50_ms", "speedup",
                                                                          "size_bytes") and v is not None})
    tags = {"tune.verdict": summary["verdict"], "tune.best_cell": best.get("cell", ""),
            "tune.command": summary["command"], "mlflow.note.content": summary["verdict"]}
    try:
        close_tune_run(cfg.tracking, parent, metrics, tags, table, files)
    except Exception as exc:  # the files are written
        print(f"qbench tune: MLflow logging failed ({qconfig.one_line(exc)[:200]})", file=sys.stderr)
