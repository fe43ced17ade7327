"""The qbench dispatcher: subcommands, pass-through to Hydra, one-line errors with exit 2."""

from __future__ import annotations

import pytest


def test_help_lists_only_existing_commands(run_qbench) -> None:
    from qbench.cli import COMMANDS

    out = run_qbench("--help")
    assert out.returncode == 0
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)


def test_unknown_command_is_one_line_exit_2(run_qbench) -> None:
    out = run_qbench("frobnicate")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown command 'frobnicate'" in out.stderr


@pytest.mark.parametrize(
    "arg,expected",
    [
        ("quant.weights.bits=1", "quant.weights.bits=1: must be an integer in 2..16"),
        ("model=nope", "model=nope: unknown option; valid values: checkpoint, digits_cnn, hf, minilm, mobilenet_v2, "
                       "onnx, resnet18, smollm2, tv"),
        ("quant.weights.observer=magic", "valid values: minmax, percentile, mse, histogram"),
    ],
)
def test_bad_config_is_one_line_exit_2_and_writes_nothing(run_qbench, tmp_path, arg: str, expected: str) -> None:
    out = run_qbench("run", arg)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert expected in err and "\n" not in err and "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "results").exists()


def test_run_passes_hydra_flags_through(run_qbench) -> None:
    out = run_qbench("run", "--cfg", "job", "quant=w4a8_pc", "model=resnet18")
    assert out.returncode == 0, out.stderr
    assert "arch: resnet18" in out.stdout and "observer: mse" in out.stdout
    help_out = run_qbench("run", "--help")
    assert help_out.returncode == 0 and "quant: " in help_out.stdout and "w8a8_pc" in help_out.stdout


def test_ls_lists_groups_and_options(run_qbench) -> None:
    out = run_qbench("ls")
    assert out.returncode == 0
    assert ("quant: dynamic8, fp32, qat_w4a8_pc, qat_w8a8_pc, w3_g128, w4_g128, w4_g128_awq, w4_g128_gptq, w4_wo, "
            "w4a8_pc, w4a8_pt_adaround, w4a8_pt_cle, w4a8_pt_minmax, w4a8_pt_qdrop, w8_wo, w8a8, w8a8_pc (default), "
            "w8a8_smoothquant" in out.stdout)
    assert "suite: imagenet, smoke, text, vision" in out.stdout
    one = run_qbench("ls", "model")
    assert one.stdout.split() == ["checkpoint", "digits_cnn", "(default)", "hf", "minilm", "mobilenet_v2", "onnx",
                                  "resnet18", "smollm2", "tv"]
