"""Tasks as plug-ins: names listed without torch, image classification scores exactly what the cell computed
before tasks existed, and the README's example task, added as one module + one conf file to a copy of qbench,
runs a cell end to end."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from qbench import config as qconfig
from qbench.config import paths

README = Path(__file__).resolve().parents[1] / "README.md"


# ------------------------------------------------------------------------------------------- discovery
def test_task_names_and_capabilities_need_no_torch() -> None:
    code = ("import sys\n"
            "from qbench import config as qconfig\n"
            "from qbench.backends import BACKENDS, get_backend\n"
            "from qbench.cli import compose\n"
            "import qbench.tasks\n"
            "for name in BACKENDS:\n"
            "    get_backend(name).unsupported_reason(qconfig.validate(compose([f'backend={name}'])))\n"
            "print(qconfig.names.task_names(), 'torch' in sys.modules, 'torchvision' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "('embedding_similarity', 'image_classification', 'language_modeling') False False"


def test_unknown_task_is_a_one_line_error(compose) -> None:
    with pytest.raises(qconfig.ConfigError, match=r"^task\.name=nope: invalid value; valid values: "
                                                  r"embedding_similarity, image_classification, "
                                                  r"language_modeling$"):
        qconfig.validate(compose("task.name=nope"))
    from qbench.tasks import get_task

    with pytest.raises(ValueError, match=r"task\.name=nope: invalid value"):
        get_task("nope")


def test_default_task_keeps_cell_names_and_hashes(compose) -> None:
    node = compose("quant=w8a8_pc", "backend=onnxruntime")
    config = qconfig.cell_config_dict(node)
    assert config["task"] == {"name": "image_classification", "options": {}}
    without = {k: v for k, v in config.items() if k != "task"}  # a cell as configured before tasks existed
    assert qconfig.cell_hash(config) == qconfig.cell_hash(without)
    assert qconfig.cell_name(node) == "digits_cnn/w8a8-pc/onnxruntime"
    other = {**config, "task": {"name": "digit_regression", "options": {}}}
    assert qconfig.cell_hash(other) != qconfig.cell_hash(config)


# --------------------------------------------------------------------- image classification: same figures
# The cell's accuracy figures as the pipeline computed them before tasks existed (qbench/worker/pipeline.py
# _accuracy and qbench/measure/accuracy.py at 39cff74), copied here so that a change of any figure fails.
def _old_topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels.unsqueeze(1)).any(dim=1).float().mean())


def _old_sqnr(reference: torch.Tensor, output: torch.Tensor) -> float:
    noise = float((reference.double() - output.double()).pow(2).sum())
    signal = float(reference.double().pow(2).sum())
    if noise == 0.0:
        return float("inf")
    return 10.0 * torch.log10(torch.tensor(signal / noise)).item()


def _old_kl(reference: torch.Tensor, output: torch.Tensor) -> float:
    log_p = F.log_softmax(reference.double(), dim=1)
    log_q = F.log_softmax(output.double(), dim=1)
    return max(0.0, float((log_p.exp() * (log_p - log_q)).sum(dim=1).mean()))


@torch.inference_mode()
def _old_accuracy(deployed_logits, fp32_module, simulated, loader) -> dict[str, float]:
    outputs, references, simulated_out, labels = [], [], [], []
    for x, y in loader:
        outputs.append(deployed_logits(x))
        references.append(fp32_module(x))
        simulated_out.append(simulated(x))
        labels.append(y)
    out, ref, lab, sim = torch.cat(outputs), torch.cat(references), torch.cat(labels), torch.cat(simulated_out)
    m = {"acc.sqnr_db": _old_sqnr(ref, out)}
    m["acc.agreement_fp32"] = float((out.argmax(1) == ref.argmax(1)).float().mean())
    m["acc.kl_fp32"] = _old_kl(ref, out)
    fp32_top1, top1 = _old_topk(ref, lab, 1), _old_topk(out, lab, 1)
    m.update({"acc.top1": top1, "acc.top5": _old_topk(out, lab, 5), "acc.fp32_top1": fp32_top1,
              "acc.delta_top1": top1 - fp32_top1})
    m["acc.top1_simulated"] = _old_topk(sim, lab, 1)
    m["acc.gap_top1"] = m["acc.top1"] - m["acc.top1_simulated"]
    m["acc.agreement_simulated"] = float((out.argmax(1) == sim.argmax(1)).float().mean())
    m["acc.sqnr_vs_simulated_db"] = _old_sqnr(sim, out)
    return m


@pytest.mark.parametrize("backend", ["torch_int8", "onnxruntime"])
def test_image_classification_scores_a_digits_cell_exactly_as_before(compose, reference_models, tmp_path,
                                                                      backend) -> None:
    import numpy as np

    from qbench.backends import get_backend
    from qbench.backends.deployment import DeployContext
    from qbench.quant import apply_scheme, int8_path
    from qbench.tasks import get_task
    from qbench.worker.pipeline import evaluate, simulate_outputs
    from qbench.zoo.models import FP32Model

    cfg = qconfig.validate(compose("model=digits_cnn", "quant=w8a8_pc", f"backend={backend}"))
    task = get_task(cfg.task.name)
    splits = task.splits(cfg, need_train=True)
    fp32 = reference_models["digits_cnn"]
    deploy_cfg, emulate, tags = int8_path.for_cell(cfg)
    sim, _ = apply_scheme(fp32, deploy_cfg.quant, splits, None, emulate)
    deployment = get_backend(backend).deploy(DeployContext(deploy_cfg, fp32, splits, tmp_path, sim,
                                                           int8_path=tags.get("int8.path", "none")))
    new = evaluate(task, deployment, {"fp32": FP32Model(fp32).outputs, "simulated": simulate_outputs(sim)}, splits,
                   cfg.measure.eval_batch_size)

    if backend == "torch_int8":  # what the deployment's run and to_logits did: the converted module, as float
        def deployed_logits(x: torch.Tensor) -> torch.Tensor:
            return deployment.runtime(x.contiguous()).float()
    else:  # the session's first output
        session = deployment.runtime
        name, output = session.get_inputs()[0].name, session.get_outputs()[0].name

        def deployed_logits(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.asarray(session.run([output], {name: np.ascontiguousarray(x.numpy())})[0]))

    old = _old_accuracy(deployed_logits, fp32, sim, splits.loader("evaluation", cfg.measure.eval_batch_size))
    assert new == old  # same names, same values, bit for bit
    assert task.metric in new and task.higher_is_better


# ------------------------------------------------------------------------------------- the README example
def _readme_example() -> tuple[str, str]:
    """The example task's module and conf file, as the README shows them."""
    section = README.read_text().split("## Tasks", 1)[1].split("\n## ", 1)[0]
    module = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    conf = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return module, conf


def _copy_of_qbench(root: Path) -> tuple[Path, Path]:
    """qbench as installed here, copied under ``root`` so that a task can be added to it: (import path, conf/)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = Path(__import__("qbench").__file__).parent
    shutil.copytree(package, root / "qbench", ignore=ignore)
    if paths.PROJECT_DIR is None:  # a regular install: conf/ and suites/ ship inside the package
        return root, root / "qbench" / "_resources" / "conf"
    for name in ("conf", "suites"):
        shutil.copytree(paths.PROJECT_DIR / name, root / name, ignore=ignore)
    shutil.copy(paths.PROJECT_DIR / "pyproject.toml", root / "pyproject.toml")
    return root, root / "conf"


def test_readme_example_task_is_one_module_and_one_conf_file(qbench_cache, tmp_path) -> None:
    module, conf = _readme_example()
    assert len(module.splitlines()) <= 40
    source, conf_dir = _copy_of_qbench(tmp_path / "src")
    (source / "qbench" / "tasks" / "digit_regression.py").write_text(module)
    (conf_dir / "task" / "digit_regression.yaml").write_text(conf)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(source), "QBENCH_CACHE": str(qbench_cache), "COLUMNS": "120"}

    def qbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qbench", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)

    listed = qbench("ls", "task")
    assert listed.returncode == 0 and "digit_regression" in listed.stdout, listed.stdout + listed.stderr
    out = qbench("run", "task=digit_regression", "quant=w8a8_pc", "backend=onnxruntime", "measure=quick",
                 "tracking=none")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = work.glob("results/runs/*/record.json")
    record = json.loads(path.read_text())
    m, tags = record["metrics"], record["tags"]
    assert record["status"] == "finished" and record["cell"] == "digit_regression:digits_cnn/w8a8-pc/onnxruntime"
    assert tags["task"] == "digit_regression" and tags["task.metric"] == "reg.mse" and tags["task.direction"] == "lower"
    assert 0 <= m["reg.mse"] < 1 and 0 <= m["reg.mse_fp32"] < 1 and m["reg.mse_vs_fp32"] >= 0
    assert math.isfinite(m["reg.gap_mse"]) and "acc.top1" not in m
    assert m["latency.p50_ms"] > 0 and m["throughput.samples_per_s"] > 0 and tags["kernel"] == "int8"
    # the copy's task list, not the installed one
    from qbench.config.names import task_names

    assert "digit_regression" not in task_names()


def test_fp32_outputs_are_replayed_only_for_the_inputs_they_were_computed_on(tmp_path) -> None:
    """The FP32 reference's outputs, kept by the first cell, are replayed call by call while the inputs match;
    a changed input is recomputed, and outputs too large to keep are neither held nor saved."""
    from qbench.worker import replay
    from qbench.worker.replay import ReplayedOutputs

    calls: list[int] = []

    def model(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"y": inputs["x"] * 2}

    batches = [{"x": torch.arange(4.0) + i} for i in range(3)]
    path = tmp_path / "out.pt"
    first = ReplayedOutputs(model, path)
    expected = [first(b)["y"] for b in batches]
    first.save()
    assert len(calls) == 3 and path.is_file() and not first.all_replayed
    second = ReplayedOutputs(model, path)
    assert all(torch.equal(second(b)["y"], e) for b, e in zip(batches, expected, strict=True))
    assert len(calls) == 3 and second.all_replayed
    third = ReplayedOutputs(model, path)
    changed = [batches[0], {"x": torch.zeros(4)}, batches[2]]
    assert torch.equal(third(changed[1 - 1])["y"], expected[0]) and torch.equal(third(changed[1])["y"], torch.zeros(4))
    assert len(calls) == 4 and not third.all_replayed
    big = ReplayedOutputs(lambda inputs: {"y": torch.zeros(1)}, tmp_path / "big.pt")
    big.nbytes = replay.MAX_BYTES  # as if 1 GiB had been kept already
    big({"x": torch.zeros(1)})
    big.save()
    assert not (tmp_path / "big.pt").exists() and big.calls[0][1] == {}


def test_a_simulation_recorded_by_its_torch_cell_is_replayed_in_its_reduced_form(tmp_path) -> None:
    """The torch cell (record_only) gets its full outputs and keeps the task's reduced form; a real backend's
    cell replays that form without calling the model, and gets the same form when it has to compute it."""
    from qbench.worker.replay import ReplayedOutputs

    calls: list[int] = []

    def model(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"logits": inputs["x"].unsqueeze(-1) * torch.arange(3.0)}

    def reduce(inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"argmax": outputs["logits"].argmax(-1)}

    batches = [{"x": torch.tensor([1.0, -1.0]) * (i + 1)} for i in range(2)]
    recorder = ReplayedOutputs(model, tmp_path / "sim.pt", reduce, record_only=True)
    full = [recorder(b) for b in batches]
    recorder.save()
    assert set(full[0]) == {"logits"} and len(calls) == 2
    replayed = ReplayedOutputs(model, tmp_path / "sim.pt", reduce)
    assert [replayed(b)["argmax"].tolist() for b in batches] == [[2, 0], [2, 0]]
    assert replayed.all_replayed and len(calls) == 2
    computed = ReplayedOutputs(model, tmp_path / "other.pt", reduce)
    assert set(computed(batches[0])) == {"argmax"} and len(calls) == 3


def test_language_modeling_scores_a_replayed_simulation_as_the_model_itself(compose) -> None:
    """The deployment gap of a language model from the simulation's replay form (per-token log-probability and
    argmax) equals the one from its logits."""
    from qbench.tasks import get_task

    task = get_task("language_modeling", compose("+workload=smollm2_perplexity").task.options)
    torch.manual_seed(0)
    windows = [torch.randint(0, 50, (1, 12)) for _ in range(3)]
    weights = {role: torch.randn(50, 50) for role in ("deployed", "fp32", "simulated")}

    def model(role: str):
        return lambda inputs: {"logits": weights[role][inputs["input_ids"]]}

    class Splits:
        def loader(self, name: str, batch: int):
            return ((w, None) for w in windows)

        def named(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"input_ids": batch}

    models = {role: model(role) for role in weights}
    direct = task.evaluate(models, Splits(), 4)
    reduced = dict(models, simulated=lambda inputs: task.replay_form(inputs, models["simulated"](inputs)))
    assert task.evaluate(reduced, Splits(), 4) == pytest.approx(direct, rel=1e-6)
    assert {"lm.perplexity_simulated", "lm.agreement_simulated"} <= set(direct)
