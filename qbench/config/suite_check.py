"""A suite's YAML and its ``suite.check`` settings (the gates of ``qbench check``, the deployment-gap thresholds
that the summary and reports also apply), read as they are now."""

from __future__ import annotations

from pathlib import Path

from qbench.config import paths
from qbench.config.schema import CheckConfig
from qbench.config.validate import one_line


class SuiteSettingsError(ValueError):
    """A suite's ``suite.check`` section is invalid (one line)."""


def suite_yaml(suite: str) -> Path | None:
    """``NAME.yaml`` in the first suites directory that has it (the user's ./suites, then qbench's)."""
    for directory in paths.suite_dirs():
        path = directory / f"{suite}.yaml"
        if path.is_file():
            return path
    return None


def check_settings(suite: str) -> CheckConfig:
    """The suite's ``suite.check`` section over the defaults of :class:`qbench.config.CheckConfig` (defaults
    alone when the suite has no YAML here). The YAML is read as it is now: the policy of today's check."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(CheckConfig)
    path = suite_yaml(suite)
    try:
        if path is not None:
            section = OmegaConf.select(OmegaConf.load(path), "suite.check")
            if section is not None:
                node = OmegaConf.merge(node, section)
        settings: CheckConfig = OmegaConf.to_object(node)  # type: ignore[assignment]
    except Exception as exc:  # unknown key or wrong type in the YAML
        raise SuiteSettingsError(f"{path}: suite.check: {one_line(exc)}") from None
    for key in ("top1_tolerance_pt", "speedup_tolerance", "latency_tolerance", "memory_tolerance_pct",
                "memory_tolerance_mb", "size_tolerance_pct", "size_tolerance_mb", "deployment_gap_pt"):
        if getattr(settings, key) < 0:
            raise SuiteSettingsError(f"{path}: suite.check.{key}={getattr(settings, key)}: must be >= 0")
    if not 0 <= settings.min_agreement_simulated <= 1:
        raise SuiteSettingsError(f"{path}: suite.check.min_agreement_simulated={settings.min_agreement_simulated}: "
                                 "must be a fraction in [0, 1]")
    if not 0 < settings.alpha < 1:
        raise SuiteSettingsError(f"{path}: suite.check.alpha={settings.alpha}: must be in (0, 1)")
    for scheme, floor in {**settings.floors, "floor_8bit": settings.floor_8bit}.items():
        if not 0 <= floor <= 1:
            raise SuiteSettingsError(f"{path}: suite.check floor {scheme}={floor}: must be a fraction in [0, 1]")
    return settings
