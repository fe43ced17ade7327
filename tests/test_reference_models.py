"""Reference models: accuracy floors on the digits evaluation split, cache reuse, cache keys."""

from __future__ import annotations

import pytest
import torch

from qbench import config as qconfig
from qbench.data import load_splits
from qbench.zoo import cache

FLOORS = {"digits_cnn": 0.97, "resnet18": 0.97, "mobilenet_v2": 0.95}


@pytest.mark.parametrize("name", list(FLOORS))
def test_fp32_accuracy_floor(compose, reference_models, name: str) -> None:
    cfg = qconfig.validate(compose(f"model={name}"))
    x, y = load_splits(cfg.dataset, cfg.model).evaluation.tensors
    with torch.inference_mode():
        top1 = float((reference_models[name](x).argmax(1) == y).float().mean())
    assert top1 >= FLOORS[name], f"{name}: top-1 {top1:.4f} < {FLOORS[name]}"
    assert len(y) == 360


def test_second_load_reuses_the_cache(compose, reference_models, monkeypatch) -> None:
    from qbench.zoo import reference

    cfg = qconfig.validate(compose("model=digits_cnn"))
    directory = cache.reference_dir(cfg.model, cfg.dataset)
    before = (directory / "model.pt").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("retrained a cached model")

    monkeypatch.setattr(reference, "_train_and_save", no_training)
    _, meta = reference.load_reference(cfg.model, cfg.dataset, show_progress=False)
    assert (directory / "model.pt").stat().st_mtime_ns == before
    assert meta["eval_top1"] >= FLOORS["digits_cnn"]


def test_cache_key_depends_on_recipe_and_split_not_on_label(compose, qbench_cache) -> None:
    base = qconfig.validate(compose("model=resnet18"))
    key = cache.reference_key(base.model, base.dataset)
    assert cache.reference_dir(base.model, base.dataset).parent == qbench_cache / "models"
    assert cache.reference_key(qconfig.validate(compose("model=resnet18", "model.recipe.epochs=3")).model,
                               base.dataset) != key
    other_split = qconfig.validate(compose("model=resnet18", "dataset.split_seed=1"))
    assert cache.reference_key(other_split.model, other_split.dataset) != key
    assert cache.reference_key(qconfig.validate(compose("model=resnet18", "model.name=renamed")).model,
                               base.dataset) == key


def test_digits_splits_are_stratified_disjoint_and_seeded(compose) -> None:
    cfg = qconfig.validate(compose("model=resnet18"))
    a = load_splits(cfg.dataset, cfg.model)
    b = load_splits(cfg.dataset, cfg.model)
    assert torch.equal(a.evaluation.tensors[0], b.evaluation.tensors[0])
    assert a.input_shape == (3, 32, 32)
    sizes = (len(a.train), len(a.calibration), len(a.evaluation))
    assert sizes == (1257, 180, 360)
    counts = torch.bincount(a.evaluation.tensors[1], minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified: ~36 per class
    all_labels = torch.cat([a.train.tensors[1], a.calibration.tensors[1], a.evaluation.tensors[1]])
    from sklearn.datasets import load_digits

    assert torch.equal(torch.bincount(all_labels), torch.bincount(torch.from_numpy(load_digits().target)))
