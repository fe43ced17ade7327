"""``qbench``: a thin dispatcher in front of Hydra (which has no subcommands of its own).

    qbench run [hydra overrides / flags]   one cell, or a suite with +suite=NAME (args go to Hydra as is)
    qbench ls [GROUP]                      config groups and their options
    qbench analyze [hydra overrides]       per-layer sensitivity of one cell's scheme (qbench/cli/analyze.py)
    qbench tune [hydra overrides] --max-drop X   best configuration within a budget (qbench/cli/tune.py)

Bad input (unknown option, out-of-range value) is reported in one line with the valid values, exit 2,
before any work starts and without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from qbench import __version__
from qbench import config as qconfig
from qbench.config import paths

# flags Hydra takes that mean "do not run the task" (help, info, print config)
_HYDRA_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--version",
                     "--shell-completion", "-sc")
_GROUPS = (*paths.CONFIG_GROUPS, "suite")


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit 2."""


def _fail(message: str) -> int:
    print(f"qbench: {message}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------- run
def _parse_overrides(args: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    overrides = [a for a in args if not a.startswith("-")]
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise UsageError(qconfig.one_line(exc)) from None


def check_group_choices(args: list[str]) -> None:
    """Every ``group=option`` (sweeps included) must name an existing option of that group."""
    for override in _parse_overrides(args):
        key = override.get_key_element().lstrip("+~")
        if key not in _GROUPS or override.is_delete():
            continue
        valid = qconfig.group_options(key)
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [
            override.get_value_element_as_str()]
        for value in values:
            if value not in valid:
                raise UsageError(f"{key}={value}: unknown option; valid values: {', '.join(valid)}")


def is_multirun(args: list[str]) -> bool:
    if "-m" in args or "--multirun" in args:
        return True
    return any(o.get_key_element().lstrip("+") == "suite" for o in _parse_overrides(args))


def compose(overrides: list[str]):
    """Compose the config the way ``qbench run`` would (for validation and for tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from qbench.backends import register_backend_schemas

    qconfig.register_configs()
    register_backend_schemas()
    with initialize_config_dir(config_dir=str(paths.CONF_DIR), version_base="1.3", job_name="qbench"):
        return hydra_compose(config_name="config", overrides=overrides)


def _backend_setting_hint(args: list[str]) -> str | None:
    """A clearer line than Hydra's "Key 'x' not in 'BackendConfig'" for a setting of another backend."""
    from qbench.backends import foreign_setting

    parsed = _parse_overrides(args)
    backend = next((o.get_value_element_as_str() for o in parsed if o.get_key_element() == "backend"),
                   "torch")  # conf/config.yaml's default backend
    for override in parsed:
        key = override.get_key_element().lstrip("+~")
        if key.startswith("backend.") and (hint := foreign_setting(backend, key.removeprefix("backend."))):
            return hint
    return None


# dict-valued keys whose entries are new keys for Hydra, so an override adds them with '+'
_OPEN_DICTS = ("quant.layers", "quant.algorithm_options")


def composition_hint(args: list[str], error: str) -> str | None:
    """A clearer line than Hydra's ``error`` for a known mistake: a setting of another backend, or an entry of
    ``quant.layers`` / ``quant.algorithm_options`` set without the '+' that adds new keys."""
    hint = _backend_setting_hint(args)
    if hint or "not in struct" not in error:
        return hint
    for arg in args:
        key = arg.split("=", 1)[0]
        node = next((d for d in _OPEN_DICTS if key == d or key.startswith(f"{d}.")), None)
        if "=" in arg and node:
            return f"{key}: entries of {node} are new keys, added with '+': +{arg}"
    return None


def preflight(args: list[str]) -> None:
    """Validate a single-cell run completely (composition, types, ranges, capabilities) before any work."""
    check_group_choices(args)
    if is_multirun(args):
        return  # the suite sweeper validates every cell of the grid before launching any
    overrides = [a for a in args if not a.startswith("-")]
    try:
        cfg_node = compose(overrides)
    except Exception as exc:  # Hydra/OmegaConf composition errors: unknown key, wrong type
        raise UsageError(composition_hint(args, qconfig.one_line(exc)) or qconfig.one_line(exc)) from None
    try:
        cfg = qconfig.validate(cfg_node)
    except qconfig.ConfigError as exc:
        raise UsageError(str(exc)) from None
    from qbench.orchestrate import preflight as checks

    try:
        missing = checks.unavailable_reason(cfg)
    except checks.PreflightError as exc:
        raise UsageError(str(exc)) from None
    if missing:
        raise UsageError(missing)
    reason = checks.unsupported_reason(cfg)
    if reason:
        raise UsageError(f"{qconfig.cell_name(cfg)} cannot run on backend {cfg.backend.name}: {reason}")


def cmd_run(args: list[str]) -> int:
    if not any(a in _HYDRA_INFO_FLAGS or a.split("=")[0] in _HYDRA_INFO_FLAGS for a in args):
        try:
            preflight(args)
        except UsageError as exc:
            return _fail(str(exc))
    from qbench.orchestrate import app

    sys.argv = ["qbench run", *args]
    app.exit_status = 0
    try:
        app.hydra_main()
    except KeyboardInterrupt:  # the worker in flight was stopped with us; finished cells are recorded
        print("qbench: interrupted; finished cells are kept - run the same command again to resume a suite",
              file=sys.stderr)
        return 130
    return app.exit_status


# ------------------------------------------------------------------------------------------------ ls
def cmd_ls(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="qbench ls", description="List config groups and their options.")
    parser.add_argument("group", nargs="?", choices=_GROUPS)
    ns = parser.parse_args(args)
    from omegaconf import OmegaConf

    defaults = {}
    for item in OmegaConf.load(paths.CONF_DIR / "config.yaml").defaults:
        if isinstance(item, dict) or hasattr(item, "items"):
            defaults.update(dict(item))
    for group in [ns.group] if ns.group else _GROUPS:
        options = qconfig.group_options(group)
        shown = [f"{o} (default)" if defaults.get(group) == o else o for o in options]
        print(f"{group}: {', '.join(shown)}" if not ns.group else "\n".join(shown))
    return 0


# ---------------------------------------------------------------------------------------------- main
def _lazy(module: str, function: str) -> Callable[[list[str]], int]:
    """A subcommand implemented in another module, imported only when it is used (keeps start-up fast)."""

    def command(args: list[str]) -> int:
        from importlib import import_module

        return getattr(import_module(module), function)(args)

    return command


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (cmd_run, "run one cell, or a suite with +suite=NAME (arguments are Hydra overrides)"),
    "ls": (cmd_ls, "list config groups and their options"),
    "sync": (_lazy("qbench.track.sync", "cmd_sync"), "upload local records that did not reach MLflow (exactly once)"),
    "compare": (_lazy("qbench.cli.compare", "cmd_compare"), "compare suite cells from MLflow (table, md, csv, html)"),
    "ui": (_lazy("qbench.cli.compare", "cmd_ui"), "serve the MLflow UI for the local store on 127.0.0.1"),
    "analyze": (_lazy("qbench.cli.analyze", "cmd_analyze"), "per-layer sensitivity of one cell's scheme (arguments: "
                "Hydra overrides, as for run)"),
    "tune": (_lazy("qbench.cli.tune", "cmd_tune"), "the best per-layer configuration within an accuracy budget, "
             "measured (--max-drop X --objective latency|size|bops; arguments: Hydra overrides)"),
    "check": (_lazy("qbench.cli.check", "cmd_check"), "compare a suite run with its baseline (exit 1: regression)"),
    "baseline": (_lazy("qbench.cli.check", "cmd_baseline"), "write (update) or show a suite's regression baseline"),
}


def usage() -> str:
    lines = ["usage: qbench COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10}{help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "qbench COMMAND --help for the command's own options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"qbench {__version__}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        return _fail(f"unknown command '{command}' (valid: {', '.join(COMMANDS)})")
    return COMMANDS[command][0](argv[1:])


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
