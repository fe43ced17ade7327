"""torch_int8's real int4 weight-only path (PyTorch's CPU int4 packed-weight matmul) and its deployment of models
torch.fx cannot trace (transformer-like forward with python control flow): int4 weight-only, dynamic int8, and the
one-line refusal of static int8."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qbench import config as qconfig
from qbench.backends import get_backend
from qbench.backends.deployment import DeployContext
from qbench.backends.torch_int8.int4 import Int4WeightOnlyLinear
from qbench.config.schema import TensorQuantConfig
from qbench.quant import int8_path
from qbench.quant.simulate import QuantizedLayer, build_simulated_model


def _simulated_linear(k: int, n: int, group_size: int, symmetric: bool, bias: bool = True) -> QuantizedLayer:
    torch.manual_seed(k + n + group_size + symmetric)
    spec = TensorQuantConfig(bits=4, granularity="per_group", group_size=group_size, symmetric=symmetric,
                             observer="minmax")
    layer = QuantizedLayer(nn.Linear(k, n, bias=bias), "fc", spec, None)
    layer.quantize_weight()
    return layer


@pytest.mark.parametrize("group_size", [32, 128])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_linear_runs_the_simulated_grid(group_size: int, symmetric: bool, dtype: torch.dtype) -> None:
    """Same integer grid as the simulation: the weight the kernel computes with (read back through an identity
    input) gives back qbench's integer codes exactly, and equals the simulation's dequantized weight in float32
    (asymmetric: zero = (8 - zp) * s, to 1e-5 of a step). Outputs agree with the simulation to 1e-5 of their
    magnitude in float32 (summation order only) and to 1e-2 in bfloat16 (8 significant bits: the input, the scales
    and the output are rounded to 2^-9 relative, measured ~3e-3 at K = 512)."""
    layer = _simulated_linear(512, 256, group_size, symmetric)
    module = Int4WeightOnlyLinear.from_quantized(layer, compute_dtype=dtype)
    q = layer.weight_q
    assert q is not None
    sz = module.scales_and_zeros.float().repeat_interleave(group_size, dim=0)  # (K, N, 2)
    with torch.no_grad():
        eye = torch.eye(512, dtype=dtype)
        kernel_weight = torch._weight_int4pack_mm_for_cpu(eye, module.packed, group_size, module.scales_and_zeros)
        kernel_weight = kernel_weight.float().t()
        codes = torch.round((kernel_weight - sz[..., 1].t()) / sz[..., 0].t()) + 8 - (8 if symmetric else 0)
        assert torch.equal(codes.to(torch.int32), q.codes.to(torch.int32))
        if dtype == torch.float32:
            step = q.scale.reshape(256, -1).repeat_interleave(group_size, dim=1)
            assert ((kernel_weight - layer.weight_fq).abs() / step).max() < 1e-5
        x = torch.randn(3, 5, 512)
        expected, got = layer(x), module(x)
    assert got.shape == expected.shape == (3, 5, 256) and got.dtype == torch.float32
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert (got - expected).abs().max() <= tolerance * expected.abs().max()
    # the kernel really holds 4-bit weights: K * N / 2 bytes of codes plus a scale and a zero per group
    assert module.packed.dtype == torch.uint8 and module.packed.numel() == 512 * 256 // 2
    per_group = 2 * (4 if dtype == torch.float32 else 2)
    assert module.packed_nbytes() == 512 * 256 // 2 + (512 // group_size) * 256 * per_group
    assert not any(p.dtype.is_floating_point and p.numel() >= 512 * 256 for p in module.buffers())


def test_symmetric_codes_map_exactly_and_odd_shapes_are_padded() -> None:
    """K not a multiple of the group (zero-padded input) and N not a multiple of 16 (sliced rows): still exact."""
    layer = _simulated_linear(100, 10, 32, True, bias=False)
    module = Int4WeightOnlyLinear.from_quantized(layer, compute_dtype=torch.float32)
    assert (module.k_pad, module.n_pad) == (28, 6)
    with torch.no_grad():
        assert torch.equal(module(torch.eye(100)).t(), layer.weight_fq)
        x = torch.randn(4, 100)
        assert (module(x) - layer(x)).abs().max() <= 1e-5 * layer(x).abs().max()


def test_other_weights_are_refused() -> None:
    spec = TensorQuantConfig(bits=3, granularity="per_group", group_size=32, symmetric=True, observer="minmax")
    layer = QuantizedLayer(nn.Linear(64, 32), "fc", spec, None)
    layer.quantize_weight()
    with pytest.raises(ValueError, match="3-bit weight-only"):
        Int4WeightOnlyLinear.from_quantized(layer)


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ((), None),
        (("quant.weights.group_size=128", "quant.weights.symmetric=false"), None),
        (("quant.weights.bits=8",), "quant.method=dynamic"),
        (("quant.weights.bits=3",), "3-bit weight-only"),
        (("quant.weights.granularity=per_channel",), "per-group scales"),
        (("quant.weights.group_size=16",), "group_size=16"),
    ],
)
def test_torch_int8_weight_only_capability(compose, overrides: tuple[str, ...], fragment: str | None) -> None:
    cfg = qconfig.validate(compose("quant=w4_wo", "backend=torch_int8", *overrides))
    backend = get_backend("torch_int8")
    reason = backend.unsupported_reason(cfg)
    assert reason is None if fragment is None else fragment in reason and "\n" not in reason
    assert backend.native_layer_types(cfg) == ("Linear",)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class TinyLM(nn.Module):
    """Transformer-like: pre-norm blocks and a 100-way head; data-dependent control flow, so FX cannot trace it."""

    def __init__(self, d: int = 64, blocks: int = 2, vocab: int = 100) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block(d, 4, 4 * d) for _ in range(blocks))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
            if x.abs().amax() > 1e4:
                x = x / x.abs().amax()
        return self.head(self.norm(x))


def _tiny_deployment(compose, tmp_path: Path, *overrides: str):
    cfg = qconfig.validate(compose("backend=torch_int8", *overrides))
    deploy_cfg, _, tags = int8_path.for_cell(cfg)
    backend = get_backend("torch_int8")
    torch.manual_seed(0)
    fp32 = TinyLM().eval()
    sim = build_simulated_model(fp32, deploy_cfg.quant, layer_types=backend.native_layer_types(cfg))
    x = torch.randn(2, 8, 64)
    labels = torch.zeros(2)
    splits = SimpleNamespace(input_shape=(8, 64), calibration=SimpleNamespace(tensors=[x, labels]),
                             evaluation=SimpleNamespace(tensors=[x, labels]))
    ctx = DeployContext(deploy_cfg, fp32, splits, tmp_path, sim,  # type: ignore[arg-type]
                        int8_path=tags.get("int8.path", "none"))
    return backend, ctx, sim, x


def test_untraceable_transformer_on_int4_and_dynamic_int8(compose, tmp_path: Path) -> None:
    """weight-only W4 g32 runs every Linear on the int4 kernel (kernel int4; bfloat16 activations, 2e-2 of the
    output's magnitude from the float32 simulation, measured 4e-3 through 9 layers); dynamic int8 runs fbgemm's
    dynamic Linear (kernel int8; the simulation's 7-bit dynamic activation grid is fbgemm's, measured 2e-7 of the
    output's magnitude apart; 1e-3 leaves room for a rounding tie)."""
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(TinyLM())
    backend, ctx, sim, x = _tiny_deployment(compose, tmp_path / "w4", "quant=w4_wo")
    deployment = backend.deploy(ctx)
    assert deployment.kernel == "int4" and deployment.metrics["opmix.integer_mac_share"] == 1.0
    assert "int4pack.Linear=9" in deployment.tags["opmix.ops"]
    assert deployment.tags["int4.activation_dtype"] == "bfloat16"
    assert deployment.tags["int4.padded"].startswith("k=0,n=1")  # the 100-way head is padded to 112 rows
    with torch.no_grad():
        expected = sim(x)
    (got,) = deployment({"input": x}).values()
    assert (got - expected).abs().max() <= 2e-2 * expected.abs().max()

    backend, ctx, sim, x = _tiny_deployment(compose, tmp_path / "dyn", "quant=dynamic8")
    deployment = backend.deploy(ctx)
    assert deployment.kernel == "int8" and "dynamic.Linear=9" in deployment.tags["opmix.ops"]
    with torch.no_grad():
        expected = sim(x)
    (got,) = deployment({"input": x}).values()
    assert (got - expected).abs().max() <= 1e-3 * expected.abs().max()


def test_static_int8_on_an_untraceable_model_is_one_clear_error(compose, tmp_path: Path) -> None:
    backend, ctx, _, _ = _tiny_deployment(compose, tmp_path, "quant=w8a8_pc")
    with pytest.raises(RuntimeError, match=r"needs an FX-traceable model; use quant\.method=dynamic or backend=torch"):
        backend.deploy(ctx)


def test_awq_input_scale_reaches_the_int4_kernel(compose, tmp_path: Path) -> None:
    """AWQ's codes are of W * s: the deployed int4 layers must divide their input by s as the simulation does."""
    from qbench.quant.algorithms import apply_algorithm
    from qbench.quant.simulate import quantized_layers

    backend, ctx, sim, x = _tiny_deployment(compose, tmp_path / "awq", "quant=w4_wo", "quant.algorithm=awq")
    apply_algorithm(sim, "awq", {}, [(x,)])
    assert any(layer.input_smoothing is not None for layer in quantized_layers(sim))
    deployment = backend.deploy(ctx)
    with torch.no_grad():
        expected = sim(x)
    (got,) = deployment({"input": x}).values()
    assert deployment.kernel == "int4" and (got - expected).abs().max() <= 2e-2 * expected.abs().max()
