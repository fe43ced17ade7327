"""``qbench tune [OPTIONS] [HYDRA OVERRIDES] --max-drop X``: the best configuration of a cell's scheme within an
accuracy budget, for an objective (latency, size or BOPs), measured.

    qbench tune model=resnet18 backend=onnxruntime --max-drop 0.5
    qbench tune model=digits_cnn quant=w4a8_pc --max-drop 1 --relative --objective size --candidates float,bits8

1. measure the FP32 reference and the base scheme (real cells on the backend, :mod:`qbench.orchestrate.tune`,
   children of one MLflow parent run tagged ``qbench.role=tune``);
2. rank the quantized layers with ``qbench analyze``'s sensitivity (its worker, :func:`qbench.cli.analyze.
   sensitivity_of`; only the layer count when the base already meets the budget), then measure candidates — the
   base scheme with the top ``k`` ranked layers moved (kept float, or weights at N bits) — choosing ``k`` by
   galloping then binary search for the smallest ``k`` that meets the budget
   (:mod:`qbench.orchestrate.tune_search` says why);
3. pick, among the measured candidates within the budget, the best for the objective; write the table, the Pareto
   fronts, the report and the best configuration as a quant preset plus its ``qbench run`` command.

Exit status: 0 a configuration meets the budget, 1 none does (the closest is saved, with its miss) or the run
failed, 2 bad input.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from qbench import config as qconfig
from qbench.cli.common import OneLineParser, UsageError, fail, parse_cell_args

_MOVE = re.compile(r"^(float|bits=?(\d+))$")
# with --objective latency every cell also records its per-layer kernel times (the latency stage reads them)
PROFILE_OVERRIDE = "measure.layer_profile=true"


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="qbench tune", description="The best per-layer configuration of a cell's scheme "
                           "within an accuracy budget, every candidate measured on the real backend. Other arguments "
                           "are Hydra overrides, as for qbench run.")
    parser.add_argument("--max-drop", type=float, required=True, metavar="X", help="budget: the task metric may be "
                        "at most X worse than FP32 (points for accuracy metrics; %% with --relative)")
    parser.add_argument("--relative", action="store_true", help="--max-drop is a percentage of the FP32 metric")
    parser.add_argument("--objective", default="latency", help="latency (p50, default), size (artifact bytes) or "
                        "bops (bit operations): what the best configuration minimizes")
    parser.add_argument("--candidates", default="float", metavar="MOVES", help="comma-separated moves applied to "
                        "the most sensitive layers: float (kept float, default), bitsN (weights at N bits)")
    parser.add_argument("--algorithms", metavar="NAMES", help="comma-separated PTQ algorithms (quant.algorithm) to "
                        "search besides the base scheme's, e.g. rtn,cle,adaround: each gets its own prefix search "
                        "over the same ranking")
    parser.add_argument("--max-candidates", type=int, metavar="N", help="measure at most N candidates")
    parser.add_argument("--samples", type=int, metavar="N", help="sensitivity ranking on the first N evaluation "
                        "samples (qbench analyze --samples)")
    parser.add_argument("--max-layers", type=int, metavar="N", help="task-metric sensitivity for the N layers of "
                        "lowest SQNR only (qbench analyze --max-layers)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default results/tune/<cell>/<time>)")
    return parser


def parse_moves(text: str) -> dict[str, dict[str, Any]]:
    """``float,bits8`` -> {"float": {"float": True}, "bits8": {"bits": 8}}; UsageError on a bad move."""
    moves: dict[str, dict[str, Any]] = {}
    for token in (t.strip() for t in text.split(",") if t.strip()):
        match = _MOVE.match(token)
        if not match:
            raise UsageError(f"--candidates {token}: unknown move; valid moves: float, bitsN (N in 2..16)")
        if match.group(2) and not 2 <= int(match.group(2)) <= 16:
            raise UsageError(f"--candidates {token}: bits must be in 2..16")
        moves[token if not match.group(2) else f"bits{match.group(2)}"] = (
            {"float": True} if token == "float" else {"bits": int(match.group(2))})
    if not moves:
        raise UsageError("--candidates: no move given; valid moves: float, bitsN")
    return moves


def parse_algorithms(text: str | None, base: str) -> list[str]:
    """``--algorithms rtn,cle`` -> the algorithms to search besides ``base`` (in the order given, without it);
    UsageError on an unknown name."""
    from qbench.config.names import ALGORITHMS

    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    for name in names:
        if name not in ALGORITHMS:
            raise UsageError(f"--algorithms {name}: unknown algorithm; valid values: {', '.join(ALGORITHMS)}")
    return [n for i, n in enumerate(names) if n != base and n not in names[:i]]


def cmd_tune(args: list[str]) -> int:
    from qbench.cli.analyze import compose_cell
    from qbench.report.tune import OBJECTIVES

    parser = _parser()
    try:
        ns, overrides = parse_cell_args(parser, args, ("max_candidates", "samples", "max_layers"))
        if ns.objective not in OBJECTIVES:
            raise UsageError(f"--objective {ns.objective}: unknown objective; valid values: {', '.join(OBJECTIVES)}")
        if ns.max_drop < 0:
            raise UsageError(f"--max-drop={ns.max_drop:g}: must be >= 0")
        moves = parse_moves(ns.candidates)
        node, cfg = compose_cell(overrides)
        ns.algorithm_variants = parse_algorithms(ns.algorithms, cfg.quant.algorithm)
        from qbench.orchestrate.preflight import unsupported_reason

        reason = unsupported_reason(cfg)
        if reason:
            raise UsageError(f"{qconfig.cell_name(cfg)} cannot run on backend {cfg.backend.name}: {reason}")
    except UsageError as exc:
        return fail("tune", str(exc))
    except SystemExit as exc:  # --help, or argparse's own error (already printed)
        return int(exc.code or 0)
    try:
        return _tune(ns, overrides, moves, node, cfg)
    except RuntimeError as exc:
        print(f"qbench tune: {exc}", file=sys.stderr)
        return 1


def _tune(ns: Any, overrides: list[str], moves: dict[str, dict[str, Any]], node: Any,
          cfg: qconfig.QBenchConfig) -> int:
    from rich.console import Console

    from qbench.cli import compose
    from qbench.cli.analyze import sensitivity_of, slug
    from qbench.config.layers import overrides as layer_overrides
    from qbench.orchestrate.tune import TuneSession
    from qbench.orchestrate.tune_search import prefix_search

    console = Console(width=None if Console().is_terminal else 160)
    name = qconfig.cell_name(cfg)
    workdir = (ns.out or Path(cfg.results_dir) / "tune" / slug(name) / time.strftime("%Y%m%d-%H%M%S")).resolve()
    unit = "%" if ns.relative else "pt"
    console.print(f"tuning {name}: budget drop <= {ns.max_drop:g} {unit} vs FP32, objective {ns.objective} "
                  f"({workdir})", highlight=False, markup=False)
    t0 = time.perf_counter()
    parent = _open_parent(cfg, name, ns, workdir)
    cell_overrides = [*overrides, PROFILE_OVERRIDE] if ns.objective == "latency" else list(overrides)
    session = TuneSession(compose, cell_overrides, layer_overrides(cfg.quant), workdir / "cells", parent,
                          ns.relative)
    reference = session.measure_reference()
    if reference.get("status") != "finished":
        raise RuntimeError(f"the FP32 reference {reference['cell']} did not finish: {reference.get('error')}")
    base = session.measure(next(iter(moves)), 0, [], {})
    # k = 0 needs no ranking: when the base scheme meets the budget, the analysis only counts the layers (its SQNR
    # pass covers all of them; task-metric evaluations for one layer instead of all)
    within = base.figures["drop"] is not None and base.figures["drop"] <= ns.max_drop
    analysis = sensitivity_of(cfg, qconfig.cell_config_dict(node), workdir / "analysis",
                              {"samples": ns.samples, "max_layers": 1 if within else ns.max_layers})
    ranking = list(analysis["ranking"])
    console.print(f"ranking ({len(ranking)} layers, most sensitive first): {', '.join(ranking)}", highlight=False,
                  markup=False, soft_wrap=True)
    capped = False
    # the base scheme's algorithm first, then each --algorithms one over the same ranking (taken once, under the
    # base algorithm: re-ranking under each would cost an analysis per algorithm)
    for algorithm in [None, *_runnable_algorithms(ns.algorithm_variants, overrides, console)]:
        for move, override in moves.items():
            left = None if ns.max_candidates is None else ns.max_candidates - len(session.candidates)
            if left is not None and left <= 0:
                capped = True
                break

            def evaluate(k: int, move: str = move, override: dict[str, Any] = override,
                         algorithm: str | None = algorithm) -> float | None:
                candidate = session.measure(move, k, ranking[:k], override, algorithm)
                console.print(f"  {move} k={k}{f' ({algorithm})' if algorithm else ''}: {candidate.record['cell']} "
                              f"{candidate.record['status']}, drop {_num(candidate.figures['drop'], '+.2f')} {unit}",
                              highlight=False, markup=False)
                return candidate.figures["drop"]

            capped |= prefix_search(evaluate, len(ranking), ns.max_drop, left).capped
    if ns.objective == "latency" and not capped:
        capped = _latency_stage(session, ns, console)
    from qbench.cli.tune_output import finish

    return finish(ns, session, moves, ranking, analysis, cfg, workdir, parent, console, capped,
                  time.perf_counter() - t0)


def _runnable_algorithms(names: list[str], overrides: list[str], console: Any) -> list[str]:
    """The ``--algorithms`` the backend can run with the base scheme; the others are skipped with their reason."""
    from qbench.cli.analyze import compose_cell
    from qbench.orchestrate.preflight import unsupported_reason
    from qbench.orchestrate.tune import is_algorithm_override

    runnable = []
    for name in names:
        try:
            _, cfg = compose_cell([*(a for a in overrides if not is_algorithm_override(a)), f"quant.algorithm={name}"])
            reason = unsupported_reason(cfg)
        except Exception as exc:  # the scheme rejects the algorithm (e.g. its options): the same as unsupported
            reason = qconfig.one_line(exc)
        if reason:
            console.print(f"algorithm {name}: skipped ({reason})", highlight=False, markup=False, soft_wrap=True)
        else:
            runnable.append(name)
    return runnable


def _latency_stage(session: Any, ns: Any, console: Any) -> bool:
    """Keep float the layers of the best feasible candidate that its per-layer profile shows slower quantized than
    in FP32 (:mod:`qbench.orchestrate.tune_latency`), measured as up to two more candidates; True when
    ``--max-candidates`` stopped it."""
    from qbench.cli.tune_output import best_candidate
    from qbench.orchestrate import tune_latency

    best, met = best_candidate(session.candidates, ns.max_drop, "speedup")
    if best is None or not met:
        console.print("latency stage: skipped (no candidate within the budget)", highlight=False, markup=False)
        return False
    times, fp32 = tune_latency.layer_times(best.record), tune_latency.layer_times(session.reference or {})
    if times is None or fp32 is None:
        why = (best.record.get("tags") or {}).get("profile.layers", "the cells recorded no per-layer profile")
        console.print(f"latency stage: skipped ({why})", highlight=False, markup=False)
        return False
    kept = {name: dict(o) for name, o in best.layer_overrides.items()}  # what the best candidate already moved
    slow = tune_latency.slow_layers(times, fp32, skip={n for n, o in kept.items() if o.get("float")})
    console.print(f"latency stage: {len(slow)} layer(s) slower quantized than float in {best.record['cell']}"
                  + (": " + ", ".join(f"{n} (+{us:.0f} µs)" for n, us in slow) if slow else ""),
                  highlight=False, markup=False, soft_wrap=True)
    for m in tune_latency.float_counts(len(slow)):
        if ns.max_candidates is not None and len(session.candidates) >= ns.max_candidates:
            return True
        layers = {**kept, **{name: {"float": True} for name, _ in slow[:m]}}
        candidate = session.measure_layers("latency", len(layers), layers, best.algorithm)
        console.print(f"  latency: {m} slow layer(s) float: {candidate.record['cell']} {candidate.record['status']}, "
                      f"drop {_num(candidate.figures['drop'], '+.2f')}, speed-up "
                      f"{_num(candidate.figures['speedup'], '.2f')}x (best so far "
                      f"{_num(best.figures['speedup'], '.2f')}x)", highlight=False, markup=False)
    return False


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _open_parent(cfg: qconfig.QBenchConfig, name: str, ns: Any, workdir: Path) -> str | None:
    """The MLflow parent run of the tune run (None with tracking=none or when MLflow is down)."""
    if not cfg.tracking.enabled:
        return None
    from qbench.track.tune import open_tune_run

    tags = {"qbench.tune_cell": name, "tune.objective": ns.objective, "tune.max_drop": f"{ns.max_drop:g}",
            "tune.relative": str(ns.relative).lower(), "tune.candidates": ns.candidates,
            "qbench.run_dir": str(workdir)}
    try:
        return open_tune_run(cfg.tracking, Path(cfg.results_dir), name, tags)
    except Exception as exc:  # the cells still run and keep their local records
        print(f"qbench tune: MLflow unreachable, no parent run ({qconfig.one_line(exc)[:200]})", file=sys.stderr)
        return None


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))
