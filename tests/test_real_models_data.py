"""Users' own models and data: torchvision models, checkpoints, ONNX files, ImageFolder, CIFAR-10, fake data.
Every fixture is made by the test (no downloads); every error path is one line, exit 2, no record left."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from fake_datasets import write_mnist

QUICK = ("measure=quick", "tracking=none")


def _records(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cwd.glob("results/runs/*/record.json"))]


def _assert_usage_error(out: object, fragment: str, cwd: Path) -> None:
    assert out.returncode == 2, out.stdout[-1500:] + out.stderr[-1500:]
    err = out.stderr.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in out.stdout + out.stderr, err
    assert not (cwd / "results").exists()


# ----------------------------------------------------------------------------------------- ImageFolder
@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """20 images in 2 class folders (PNG and JPEG of different sizes), plus one corrupt file."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images" / "val"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            size = (40 + 3 * i, 36 + 2 * i)
            pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) // (1 + c)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    return tmp_path / "images"


def test_imagefolder_with_a_torchvision_model(run_qbench, tmp_path, image_folder) -> None:
    out = run_qbench("run", "model=tv", "model.name=mobilenet_v3_small", "model.pretrained=false",
                     "model.num_classes=2", "model.input_size=64", "model.resize_size=72", "dataset=imagefolder",
                     f"dataset.root={image_folder}", "dataset.split=val", "dataset.evaluation_size=12",
                     "dataset.calibration_size=9", "quant=w8a8_pc", "backend=onnxruntime", *QUICK)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    m = record["metrics"]
    assert record["cell"] == "mobilenet_v3_small@imagefolder/w8a8-pc/onnxruntime"
    assert m["data.unreadable_images"] == 1.0  # counted, not fatal
    assert 0.0 <= m["acc.top1"] <= 1.0 and "acc.agreement_fp32" in m
    assert record["tags"]["kernel"] in ("int8", "mixed")


def test_imagefolder_class_index_maps_folders_to_model_outputs(compose, image_folder, tmp_path) -> None:
    from qbench import config as qconfig
    from qbench.data import load_splits

    index = tmp_path / "index.json"
    index.write_text(json.dumps({"cat": 281, "dog": 207}))
    cfg = qconfig.validate(compose("model=tv", "model.name=resnet18", "model.pretrained=false", "dataset=imagefolder",
                                   f"dataset.root={image_folder}", "dataset.split=val", f"dataset.class_index={index}",
                                   "dataset.evaluation_size=15", "dataset.calibration_size=5"))
    splits = load_splits(cfg.dataset, cfg.model)
    labels = set(splits.evaluation.tensors[1].tolist()) | set(splits.calibration.tensors[1].tolist())
    assert labels <= {281, 207} and splits.input_shape == (3, 224, 224)
    assert len(splits.evaluation) + len(splits.calibration) == 19  # 20 images, one unreadable
    assert splits.notes["data.unreadable_images"] == 1.0


def test_imagefolder_missing_root_is_a_usage_error(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "model=tv", "model.name=resnet18", "model.pretrained=false", "dataset=imagefolder",
                     f"dataset.root={tmp_path / 'nowhere'}")
    _assert_usage_error(out, "does not exist (expected class sub-folders of images)", tmp_path)



def test_reference_model_on_imagefolder_fails_preflight(run_qbench, tmp_path, image_folder) -> None:
    """Reference models train on the dataset's training split, which an image folder does not have: a usage
    error before any work, for one cell and for a suite (the folder itself is valid)."""
    expected = ("model=resnet18 is a reference model that qbench trains on the dataset's training split, and "
                "dataset.name=imagefolder has none")
    data = ("model=resnet18", "dataset=imagefolder", f"dataset.root={image_folder}", "dataset.split=val")
    _assert_usage_error(run_qbench("run", *data, *QUICK), expected, tmp_path)
    suite = run_qbench("run", "+suite=smoke", "backend=torch", *data, "tracking=none")
    assert suite.returncode == 2 and expected in suite.stdout + suite.stderr, suite.stdout[-2000:]
    assert not list(tmp_path.glob("results/suites/*/*/run-*/cells/*/record.json"))

# ------------------------------------------------------------------------------------------------ CIFAR-10
def _write_cifar(root: Path, per_batch: int = 12) -> None:
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        # the official files are Python 2 pickles whose str keys load as str with encoding="latin1"
        batch = {"batch_label": name, "labels": rng.integers(0, 10, per_batch).tolist(),
                 "data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))


def test_cifar10_batch_files_written_by_the_test(run_qbench, tmp_path) -> None:
    _write_cifar(tmp_path / "data")
    out = run_qbench("run", "model=tv", "model.name=resnet18", "model.pretrained=false", "model.num_classes=10",
                     "model.input_size=32", "dataset=cifar10", f"dataset.root={tmp_path / 'data'}",
                     "dataset.calibration_size=16", "dataset.evaluation_size=10", "quant=w8a8_pc",
                     "backend=torch_int8", *QUICK)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert record["cell"] == "resnet18@cifar10/w8a8-pc/torch_int8" and record["tags"]["kernel"] == "int8"
    assert "acc.top1" in record["metrics"]


def test_cifar10_missing_says_what_to_download(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "model=tv", "model.name=resnet18", "model.pretrained=false", "dataset=cifar10",
                     f"dataset.root={tmp_path / 'empty'}")
    _assert_usage_error(out, "cifar-10-python.tar.gz", tmp_path)
    assert "dataset.download=true" in out.stderr


# ------------------------------------------------------------------------------------------ torchvision
def test_torchvision_untrained_on_fake_data_has_no_accuracy(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "model=tv", "model.name=mobilenet_v3_small", "model.pretrained=false", "dataset=fake",
                     "quant=fp32", "backend=torch", *QUICK)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    m = record["metrics"]
    assert "acc.top1" not in m and "acc.top5" not in m  # absent, not zero
    assert m["acc.agreement_fp32"] == 1.0 and m["latency.p50_ms"] > 0
    assert record["config"]["model"]["input_size"] is None and m["opcount.macs"] > 0


def test_pretrained_weights_offline_then_placed_in_torch_home(run_qbench, tmp_path) -> None:
    home = tmp_path / "torch_home"
    args = ("run", "model=tv", "model.name=resnet50", "model.pretrained=true", "dataset=fake", "quant=fp32",
            "dataset.evaluation_size=8", *QUICK, "measure.latency.throughput_batch_size=0")
    out = run_qbench(*args, env={"TORCH_HOME": str(home)})
    _assert_usage_error(out, f"expected {home}/hub/checkpoints/resnet50-11ad3fa6.pth", tmp_path)
    target = home / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    target.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet50().state_dict(), target)
    out = run_qbench(*args, env={"TORCH_HOME": str(home)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert record["config"]["model"]["pretrained"] is True and record["status"] == "finished"


# ------------------------------------------------------------------------------------------- checkpoints
def test_user_checkpoint_loads_and_a_mismatch_is_explained(run_qbench, tmp_path) -> None:
    path = tmp_path / "weights" / "my_resnet.pt"
    path.parent.mkdir()
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    common = ("run", "model=checkpoint", f"model.path={path}", "model.num_classes=10", "model.input_size=32",
              "dataset=fake", "quant=fp32", *QUICK)
    bad = run_qbench(*common, "model.arch=mobilenet_v2")
    _assert_usage_error(bad, "does not match model.arch=mobilenet_v2", tmp_path)
    assert "missing keys" in bad.stderr and "unexpected keys" in bad.stderr
    good = run_qbench(*common, "model.arch=resnet18")
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert record["cell"] == "my_resnet@fake/fp32/torch"


# ------------------------------------------------------------------------------------------------- ONNX
def _export_with_constant_weights(path: Path) -> None:
    """A small CNN exported by torch, then rewritten so its weights live in Constant nodes."""
    import onnx
    from onnx import helper

    from qbench.backends.onnxruntime.export import export_onnx
    from qbench.zoo.architectures import DigitsCNN

    export_onnx(DigitsCNN(3, 10).eval(), (3, 32, 32), path, 18)
    model = onnx.load(str(path))
    constants = [helper.make_node("Constant", [], [init.name], value=init) for init in model.graph.initializer]
    del model.graph.initializer[:]
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(constants + nodes)
    onnx.save(model, str(path))


def test_user_onnx_model_quantized_by_onnxruntime(run_qbench, tmp_path) -> None:
    path = tmp_path / "user_cnn.onnx"
    _export_with_constant_weights(path)
    out = run_qbench("run", "model=onnx", f"model.path={path}", "dataset=fake", "quant=w8a8", "backend=onnxruntime",
                     *QUICK)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    assert record["cell"] == "user_cnn@fake/w8a8/onnxruntime"
    assert record["metrics"]["opmix.integer_conv_share"] == 1.0 and "QLinearConv=3" in record["tags"]["opmix.ops"]
    assert record["metrics"]["acc.agreement_fp32"] > 0.8  # against an ORT session of the original file


def test_onnx_model_on_a_torch_backend_is_refused(run_qbench, tmp_path) -> None:
    path = tmp_path / "user_cnn.onnx"
    _export_with_constant_weights(path)
    out = run_qbench("run", "model=onnx", f"model.path={path}", "dataset=fake", "backend=torch_int8")
    _assert_usage_error(out, "the torch backends need a torch module", tmp_path)
    missing = run_qbench("run", "model=onnx", f"model.path={tmp_path / 'nope.onnx'}", "backend=onnxruntime")
    _assert_usage_error(missing, "no such file", tmp_path)


def test_mnist_idx_files_written_by_the_test(compose, tmp_path) -> None:
    """MNIST through torchvision's idx parser: 28x28 grey, resized and replicated to the model's input."""

    from qbench import config as qconfig
    from qbench.data import load_splits

    write_mnist(tmp_path, train=30, test=20)
    cfg = qconfig.validate(compose("model=tv", "model.name=resnet18", "model.pretrained=false",
                                   "model.input_size=32", "dataset=mnist", f"dataset.root={tmp_path}",
                                   "dataset.calibration_size=8", "dataset.evaluation_size=12"))
    splits = load_splits(cfg.dataset, cfg.model, need_train=False)
    assert splits.evaluation.tensors[0].shape == (12, 3, 32, 32) and len(splits.calibration) == 8
    assert splits.train is None and splits.has_labels
