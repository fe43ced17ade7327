"""``qbench analyze [OPTIONS] [HYDRA OVERRIDES]``: per-layer sensitivity of one cell's scheme.

    qbench analyze model=mobilenet_v2 quant=w4a8_pc
    qbench analyze model=digits_cnn quant=w4a8_pc tracking=none --samples 200 --max-layers 10

The overrides are ``qbench run``'s (composed and validated the same way, one line and exit 2 on a bad value). A
spawned worker (``python -m qbench.worker --analyze DIR``) builds the cell's simulated model and measures, for
every quantized layer, its weights, its activations and the whole layer (:mod:`qbench.worker.analyze`); this side
prints the table (most sensitive first), writes ``sensitivity.csv`` / ``sensitivity.png`` / ``analysis.json`` under
``results/analyze/<cell>/<time>/`` (or ``--out``) and logs them as an MLflow run tagged ``qbench.role=analysis``
(unless ``tracking=none``). Exit status: 0 done, 1 the analysis failed, 2 bad input.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from qbench import config as qconfig
from qbench.cli.common import OneLineParser, UsageError, fail, parse_cell_args


def _parser() -> OneLineParser:
    parser = OneLineParser(prog="qbench analyze", description="Per-layer sensitivity of a cell's scheme: SQNR of each "
                           "layer's output, the task metric with only that layer quantized and with only that layer "
                           "float, for weights and activations separately. Other arguments are Hydra overrides, as "
                           "for qbench run (model=..., quant=..., quant.weights.bits=...).")
    parser.add_argument("--samples", type=int, metavar="N", help="evaluate on the first N evaluation samples "
                        "(default: the whole split; tasks that score the split as a whole ignore it)")
    parser.add_argument("--max-layers", type=int, metavar="N", help="task-metric evaluations for the N layers of "
                        "lowest SQNR only (SQNR is measured for every layer); default: all layers")
    parser.add_argument("--top", type=int, default=30, metavar="N", help="layers shown in the terminal (default 30; "
                        "the CSV has all)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default results/analyze/<cell>/<time>)")
    return parser


def compose_cell(overrides: list[str]) -> tuple[Any, qconfig.QBenchConfig]:
    """Compose and validate one cell like ``qbench run`` (analyze and tune; the backend need not run the scheme
    natively: the analysis runs the simulation, quantizing the layer types that backend quantizes)."""
    from qbench import cli
    from qbench.orchestrate import preflight

    try:
        cli.check_group_choices(overrides)
        if cli.is_multirun(overrides):
            raise UsageError("analyzes one cell: no -m / +suite sweeps")
        node = cli.compose(overrides)
        cfg = qconfig.validate(node)
        missing = preflight.unavailable_reason(cfg)
    except (cli.UsageError, qconfig.ConfigError, preflight.PreflightError) as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # Hydra/OmegaConf composition errors: unknown key, wrong type
        raise UsageError(cli.composition_hint(overrides, qconfig.one_line(exc)) or qconfig.one_line(exc)) from None
    if missing:
        raise UsageError(missing)
    if cfg.quant.method == "none":
        raise UsageError("quant.method=none quantizes nothing: choose a scheme (quant=w8a8_pc, w4a8_pc, ...)")
    if cfg.model.source == "onnx":
        raise UsageError("model=onnx: a user ONNX file has no torch layers to analyze")
    return node, cfg


def _spawn(cfg: qconfig.QBenchConfig, workdir: Path) -> None:
    """Run the analysis in a spawned worker; its log in ``workdir/worker.log``; RuntimeError when it fails."""
    from qbench.config.threads import PARENT_PID_ENV, worker_env

    env = {**worker_env(cfg, dict(os.environ)), PARENT_PID_ENV: str(os.getpid())}
    log_path = workdir / "worker.log"
    deadline = time.monotonic() + cfg.measure.timeout_s
    with open(log_path, "w") as log, open(log_path, "rb") as progress:
        proc = subprocess.Popen([sys.executable, "-m", "qbench.worker", "--analyze", str(workdir)], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                _show_progress(progress)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the analysis ran longer than measure.timeout_s={cfg.measure.timeout_s:g}s "
                                       f"(try --samples or --max-layers); log: {log_path}")
                time.sleep(0.5)
            _show_progress(progress)
        finally:
            if proc.poll() is None:  # timeout or Ctrl-C: take the worker down too
                proc.kill()
                proc.wait()
    if proc.returncode != 0 or not (workdir / "analysis.json").is_file():
        lines = log_path.read_text(errors="replace").strip().splitlines()
        error = next((line for line in reversed(lines) if re.match(r"^\w+(Error|Exception)\b", line)), "")
        raise RuntimeError(f"the analysis worker failed (exit {proc.returncode}): {error or ' | '.join(lines[-3:])}; "
                           f"log: {log_path}")


def _show_progress(log: Any) -> None:
    """Echo the worker's complete new progress lines (``qbench.analyze`` log records, without the timestamp) to
    stderr; a line still being written is read again next time."""
    while (raw := log.readline()).endswith(b"\n"):
        line = raw.decode(errors="replace")
        if " qbench.analyze INFO " in line:
            print(f"  {line.split(' qbench.analyze INFO ', 1)[1].rstrip()}", file=sys.stderr, flush=True)
    log.seek(-len(raw), 1)


def cmd_analyze(args: list[str]) -> int:
    parser = _parser()
    try:
        ns, overrides = parse_cell_args(parser, args, ("samples", "max_layers", "top"))
        node, cfg = compose_cell(overrides)
    except UsageError as exc:
        return fail("analyze", str(exc))
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    return _analyze(ns, node, cfg)


def slug(name: str) -> str:
    """A cell name as one folder name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


def sensitivity_of(cfg: qconfig.QBenchConfig, config: dict[str, Any], workdir: Path,
                   options: dict[str, Any]) -> dict[str, Any]:
    """Run the analysis worker on the cell ``config`` in ``workdir`` (trains the reference model first if needed)
    and return its ``analysis.json`` (``ranking``: most sensitive layer first); RuntimeError when it fails. Also
    what ``qbench tune`` ranks its layers with."""
    from omegaconf import OmegaConf

    from qbench.orchestrate.runner import ensure_reference_model

    workdir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config), workdir / "config.yaml")
    (workdir / "options.json").write_text(json.dumps(options))
    ensure_reference_model(cfg, workdir)
    _spawn(cfg, workdir)
    return json.loads((workdir / "analysis.json").read_text())


def _analyze(ns: Any, node: Any, cfg: qconfig.QBenchConfig) -> int:
    from rich.console import Console

    from qbench.report import sensitivity

    console = Console(width=None if Console().is_terminal else 160)
    name = qconfig.cell_name(cfg)
    workdir = ns.out or Path(cfg.results_dir) / "analyze" / slug(name) / time.strftime("%Y%m%d-%H%M%S")
    config = qconfig.cell_config_dict(node)
    console.print(f"analyzing {name} (log: {workdir / 'worker.log'})", highlight=False, markup=False)
    t0 = time.perf_counter()
    try:
        analysis = sensitivity_of(cfg, config, workdir, {"samples": ns.samples, "max_layers": ns.max_layers})
    except RuntimeError as exc:
        print(f"qbench analyze: {exc}", file=sys.stderr)
        return 1
    table = sensitivity.frame(analysis)
    table.to_csv(workdir / "sensitivity.csv", index=False)
    (workdir / "sensitivity.png").write_bytes(sensitivity.bar_plot(analysis, table))
    sensitivity.print_table(analysis, table, console, ns.top)
    console.print(f"{analysis['layers']} layers ({analysis['layers_scored']} with task metrics) in "
                  f"{time.perf_counter() - t0:.0f} s; written: {workdir}/sensitivity.csv, sensitivity.png, "
                  "analysis.json", highlight=False, markup=False, soft_wrap=True)
    if cfg.tracking.enabled:
        from qbench.track.analysis import log_analysis

        try:
            run_id = log_analysis(analysis, config, table, [workdir / n for n in (
                "sensitivity.csv", "sensitivity.png", "analysis.json", "config.yaml")], cfg.tracking,
                Path(cfg.results_dir))
            console.print(f"MLflow run {run_id} (experiment {cfg.tracking.experiment}, tag qbench.role=analysis)",
                          highlight=False, markup=False)
        except Exception as exc:  # the files are written; a tracking server that is down must not lose them
            print(f"qbench analyze: MLflow logging failed ({type(exc).__name__}: {exc}); the files are in {workdir}",
                  file=sys.stderr)
    return 0
