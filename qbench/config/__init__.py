"""qbench's configuration: schema, names, validation, identity, Hydra registration.

``from qbench import config as qconfig`` gives the whole public surface (``qconfig.validate``,
``qconfig.cell_name``, the dataclasses, ...); the submodules hold one idea each. Nothing here imports torch.
"""

from __future__ import annotations

from qbench.config.identity import cell_config_dict, cell_hash, cell_name, flatten, scheme_label
from qbench.config.names import (
    ACTIVATION_GRANULARITIES,
    BIT_RANGE,
    FAULTS,
    GRANULARITIES,
    METHODS,
    OBSERVERS,
)
from qbench.config.schema import (
    BackendConfig,
    CalibrationConfig,
    CheckConfig,
    DatasetConfig,
    DebugConfig,
    EnergyConfig,
    EnergyCosts,
    LatencyConfig,
    MeasureConfig,
    ModelConfig,
    PairedConfig,
    QATConfig,
    QBenchConfig,
    QuantConfig,
    SuiteConfig,
    TaskConfig,
    TensorQuantConfig,
    ThreadsConfig,
    TrackingConfig,
    TrainRecipe,
)
from qbench.config.store import available_suites, group_options, register_configs, register_suites
from qbench.config.validate import ConfigError, fault_injected, one_line, validate

__all__ = [
    "ACTIVATION_GRANULARITIES", "BIT_RANGE", "FAULTS", "GRANULARITIES", "METHODS", "OBSERVERS", "BackendConfig",
    "CalibrationConfig", "CheckConfig", "ConfigError", "DatasetConfig", "DebugConfig", "EnergyConfig", "EnergyCosts",
    "LatencyConfig", "MeasureConfig", "ModelConfig", "PairedConfig", "QATConfig", "QBenchConfig", "QuantConfig",
    "SuiteConfig", "TaskConfig", "TensorQuantConfig", "ThreadsConfig", "TrackingConfig", "TrainRecipe",
    "available_suites", "cell_config_dict", "cell_hash", "cell_name", "fault_injected", "flatten", "group_options",
    "one_line",
    "register_configs", "register_suites", "scheme_label", "validate",
]
