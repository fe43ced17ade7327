"""Dataset registry: every dataset yields the same three splits (train / calibration / evaluation)."""

from __future__ import annotations

from qbench.data.splits import DataSplits

DATASETS = ("digits",)


def load_splits(dataset_cfg, model_cfg) -> DataSplits:
    """Load ``dataset_cfg`` shaped for ``model_cfg`` (channels, input size)."""
    if dataset_cfg.name == "digits":
        from qbench.data.digits import load_digits_splits

        return load_digits_splits(dataset_cfg, model_cfg)
    raise ValueError(f"dataset.name={dataset_cfg.name}: unknown; valid values: {', '.join(DATASETS)}")


__all__ = ["DATASETS", "DataSplits", "load_splits"]
