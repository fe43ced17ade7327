"""Shapes of real ONNX files and non-square images: a fixed batch dimension, a 3x48x320 input, several named
inputs (a signal and a recurrent state), H != W through every image dataset, and the ``model.inputs`` errors.
Every ONNX file is exported by the test (torch's TorchScript exporter: small and fast)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_datasets import write_mnist
from torch import nn

QUICK = ("measure=quick", "tracking=none", "dataset.calibration_size=24", "dataset.evaluation_size=20")


def _records(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cwd.glob("results/runs/*/record.json"))]


def _export(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, names: list[str],
            dynamic: dict[str, dict[int, str]] | None = None, outputs: tuple[str, ...] = ("out",)) -> Path:
    torch.manual_seed(0)
    torch.onnx.export(model.eval(), example, str(path), dynamo=False, opset_version=17, input_names=names,
                      output_names=list(outputs), dynamic_axes=dynamic)
    return path


def _conv_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


class TextLineNet(nn.Module):
    """A text-line recogniser's shape: 3x48x320 image in, [batch, 40 steps, 37 classes] out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 37)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(2).permute(0, 2, 1))


class SignalStateNet(nn.Module):
    """Two inputs (a 1-D signal and a recurrent state), two outputs (class scores, the next state)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(1, 16, 8, stride=4, padding=2)  # 4000 samples -> 1000 steps
        self.pool = nn.AdaptiveAvgPool1d(8)
        self.signal_fc = nn.Linear(128, 64)
        self.state_fc = nn.Linear(64, 64)
        self.head = nn.Linear(64, 12)

    def forward(self, signal: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pool(torch.relu(self.conv(signal.unsqueeze(1)))).flatten(1)
        new_state = torch.tanh(self.signal_fc(h) + self.state_fc(state))
        return self.head(new_state), new_state


# ------------------------------------------------------------------------------------------ fixed batch
def test_fixed_batch_of_one_sets_the_latency_batch(run_qbench, tmp_path) -> None:
    path = _export(_conv_classifier(), (torch.zeros(1, 3, 32, 32),), tmp_path / "edge_cnn.onnx", ["x"])
    out = run_qbench("run", "model=onnx", f"model.path={path}", "dataset=fake", "quant=w8a8", "backend=onnxruntime",
                     *QUICK, "dataset.evaluation_size=13")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    m, tags = record["metrics"], record["tags"]
    assert m["latency.batch_size"] == 1.0 and tags["latency.batch_source"] == "model"
    assert tags["model.inputs"] == "x:1x3x32x32:float32"
    assert "throughput.samples_per_s" not in m and "fixed at 1" in tags["throughput.skipped"]
    assert tags["kernel"] in ("int8", "mixed") and m["opmix.integer_conv_share"] == 1.0
    assert 0.8 < m["acc.agreement_fp32"] <= 1.0 and m["acc.sqnr_db"] > 10  # 13 samples, one call each


def test_chunks_of_a_fixed_batch_pad_the_last_and_drop_its_outputs() -> None:
    from qbench.data.batching import chunked

    x, state = torch.arange(10.0).reshape(10, 1), torch.arange(10.0, 20.0).reshape(10, 1)
    sizes = []

    def fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        sizes.append(len(batch[0]))
        return batch[0] * 100 + batch[1]

    assert torch.equal(chunked(fn, (x, state), 4), x * 100 + state)
    assert sizes == [4, 4, 4]  # 10 samples: 4 + 4 + (2 padded to 4)


# ------------------------------------------------------------------------------------------ 3 x 48 x 320
def test_text_line_input_48x320_on_onnxruntime(run_qbench, tmp_path) -> None:
    path = _export(TextLineNet(), (torch.zeros(2, 3, 48, 320),), tmp_path / "textline.onnx", ["image"],
                   {"image": {0: "batch", 2: "height", 3: "width"}})
    asks = run_qbench("run", "model=onnx", f"model.path={path}", "dataset=fake", "backend=onnxruntime")
    assert asks.returncode == 2 and "set model.input_shape=[C,H,W]" in asks.stderr, asks.stderr
    out = run_qbench("run", "model=onnx", f"model.path={path}", "model.input_shape=[3,48,320]", "dataset=fake",
                     "quant=w8a8", "backend=onnxruntime", *QUICK)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    m, tags = record["metrics"], record["tags"]
    assert tags["model.inputs"] == "image:Nx3x48x320:float32" and tags["latency.batch_source"] == "config"
    assert m["throughput.batch_size"] == 16.0 and m["latency.batch_size"] == 1.0
    assert tags["kernel"] in ("int8", "mixed") and m["opmix.integer_conv_share"] == 1.0
    # fidelity over the last dimension: 20 samples x 40 steps, each a distribution over 37 classes
    assert 0.5 < m["acc.agreement_fp32"] <= 1.0 and m["acc.sqnr_db"] > 10 and m["acc.kl_fp32"] >= 0
    assert "acc.top1" not in m


# --------------------------------------------------------------------------------------- named inputs
def test_signal_and_state_inputs_on_onnxruntime(run_qbench, tmp_path) -> None:
    path = _export(SignalStateNet(), (torch.zeros(2, 4000), torch.zeros(2, 64)), tmp_path / "kws.onnx",
                   ["signal", "state"], {"signal": {0: "batch"}, "state": {0: "batch"}}, outputs=("scores", "next"))
    out = run_qbench("run", "model=onnx", f"model.path={path}", "model.inputs={state:{fill:uniform}}", "dataset=fake",
                     "quant=w8a8", "backend=onnxruntime", *QUICK)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    m, tags = record["metrics"], record["tags"]
    assert tags["model.inputs"] == "signal:Nx4000:float32,state:Nx64:float32"
    assert tags["data.fill"] == "signal=normal,state=uniform"
    assert tags["kernel"] in ("int8", "mixed") and "opmix.integer_op_share" in m and "opmix.ops" in tags
    assert 0.5 < m["acc.agreement_fp32"] <= 1.0 and m["acc.sqnr_db"] > 10
    assert m["throughput.samples_per_s"] > 0 and "acc.top1" not in m


def test_named_inputs_are_filled_by_their_rule(compose, tmp_path) -> None:
    from qbench import config as qconfig
    from qbench.data import load_splits

    path = _export(SignalStateNet(), (torch.zeros(2, 4000), torch.zeros(2, 64)), tmp_path / "kws.onnx",
                   ["signal", "state"], {"signal": {0: "batch"}, "state": {0: "batch"}})
    cfg = qconfig.validate(compose("model=onnx", f"model.path={path}", "dataset=fake", "dataset.evaluation_size=7",
                                   "model.inputs={state:{fill:'randint:-2:3'}}"))
    splits = load_splits(cfg.dataset, cfg.model, need_train=False)
    signal, state, labels = splits.evaluation.tensors
    assert signal.shape == (7, 4000) and state.shape == (7, 64) and (labels == -1).all()
    assert set(state.unique().tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0} and state.dtype == torch.float32
    batches = splits.calibration_inputs(10, 4)
    assert [tuple(t.shape[0] for t in b) for b in batches] == [(4, 4), (4, 4), (2, 2)]


# ------------------------------------------------------------------------------------------ H != W images
def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (30 + i, 50 - i, 3), dtype=np.uint8) // (1 + c)).save(
                root / name / f"{i}.png")
    return root


def _cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"labels": rng.integers(0, 10, 12).tolist(), "data": rng.integers(0, 255, (12, 3072), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def _mnist(root: Path) -> Path:
    return write_mnist(root, train=12, test=12)


def test_non_square_images_through_every_image_dataset(compose, tmp_path) -> None:
    from qbench import config as qconfig
    from qbench.data import load_splits

    sources = {"digits": (), "imagefolder": (f"dataset.root={_image_folder(tmp_path / 'folder')}",),
               "cifar10": (f"dataset.root={_cifar(tmp_path / 'cifar')}",),
               "mnist": (f"dataset.root={_mnist(tmp_path / 'mnist')}",)}
    for name, extra in sources.items():
        cfg = qconfig.validate(compose("model=tv", "model.name=resnet18", "model.pretrained=false",
                                       "model.input_shape=[3,24,40]", "model.resize_size=null", f"dataset={name}",
                                       *extra, "dataset.calibration_size=10", "dataset.evaluation_size=10"))
        splits = load_splits(cfg.dataset, cfg.model, need_train=False)
        assert splits.evaluation.tensors[0].shape == (10, 3, 24, 40), name
        assert splits.input_shape == (3, 24, 40) and splits.contract.describe() == "input:Nx3x24x40:float32"


def test_resize_policy_covers_the_target_then_crops() -> None:
    from qbench.data.preprocess import Preprocess
    from qbench.data.transforms import to_model_input

    images = torch.rand(2, 3, 100, 150)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    stretched = to_model_input(images, Preprocess((3, 48, 320)), mean, std)
    # resize_size 64 would leave the image 96 wide: it is scaled up to cover 320 (213 x 320), then cropped
    covered = to_model_input(images, Preprocess((3, 48, 320), resize_size=64), mean, std)
    square = to_model_input(images, Preprocess((3, 56, 56), resize_size=64), mean, std)  # torchvision's own
    import torchvision.transforms.functional as TF

    reference = TF.center_crop(TF.resize(images, [64], antialias=True), [56, 56])
    assert stretched.shape == covered.shape == (2, 3, 48, 320) and torch.allclose(square, reference)
    expected = TF.center_crop(TF.resize(images, [213, 320], antialias=True), [48, 320])
    assert torch.allclose(covered, expected)


def test_non_square_torch_model_on_digits(run_qbench, tmp_path) -> None:
    out = run_qbench("run", "model=tv", "model.name=mobilenet_v3_small", "model.pretrained=false",
                     "model.num_classes=10", "model.input_shape=[3,24,40]", "dataset=digits", "quant=w8a8_pc",
                     "backend=onnxruntime", *QUICK)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (record,) = _records(tmp_path)
    m = record["metrics"]
    assert record["tags"]["model.inputs"] == "input:Nx3x24x40:float32" and record["tags"]["kernel"] in ("int8", "mixed")
    assert 0.0 <= m["acc.top1"] <= 1.0 and "acc.agreement_fp32" in m and m["opcount.macs"] > 0


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("override", "fragment"), [
    ("model.inputs={state:{fill:gaussian}}",
     "model.inputs.state.fill=gaussian: invalid fill rule; valid values: normal, uniform, zeros, ones, "
     "randint:LOW:HIGH"),
    ("model.inputs={state:{fill:'randint:5:1'}}", "valid values: normal, uniform, zeros, ones, randint:LOW:HIGH"),
    ("model.inputs={state:{size:[64]}}", "model.inputs.state.size: unknown key; valid keys: shape, dtype, fill"),
    ("model.inputs={state:{shape:[0]}}", "model.inputs.state.shape=[0]: must be a list of positive integers"),
    ("model.inputs={hidden:{fill:zeros}}", "has no input 'hidden'; its inputs: signal, state"),
    ("model.inputs={state:{shape:[32]}}", "model.inputs.state.shape=[32]: the file declares input 'state' as"),
])
def test_bad_model_inputs_is_a_one_line_error(run_qbench, tmp_path, override, fragment) -> None:
    path = _export(SignalStateNet(), (torch.zeros(2, 4000), torch.zeros(2, 64)), tmp_path / "kws.onnx",
                   ["signal", "state"], {"signal": {0: "batch"}, "state": {0: "batch"}})
    out = run_qbench("run", "model=onnx", f"model.path={path}", override, "dataset=fake", "backend=onnxruntime")
    assert out.returncode == 2, out.stdout[-1500:] + out.stderr[-1500:]
    err = out.stderr.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in out.stdout + out.stderr, err
    assert not (tmp_path / "results").exists()


def test_image_dataset_for_a_two_input_model_is_refused(run_qbench, tmp_path) -> None:
    path = _export(SignalStateNet(), (torch.zeros(2, 4000), torch.zeros(2, 64)), tmp_path / "kws.onnx",
                   ["signal", "state"], {"signal": {0: "batch"}, "state": {0: "batch"}})
    out = run_qbench("run", "model=onnx", f"model.path={path}", "dataset=digits", "backend=onnxruntime")
    assert out.returncode == 2 and "not one image (C, H, W)" in out.stderr and "use dataset=fake" in out.stderr
    torch_inputs = run_qbench("run", "model=tv", "model.name=resnet18", "model.inputs={x:{fill:zeros}}")
    assert torch_inputs.returncode == 2 and "names the inputs of an ONNX file" in torch_inputs.stderr
