"""The zoo's CPU decode kernels (``zoo/layers/csrc/matvec.cpp``): the matrix-vector products
and the fused one-token mixture of experts give what torch's path gives, the layers route one
bfloat16 row to them in inference (never with gradients on), bad operands are refused by name,
and a machine that cannot build them falls back to torch with a warning."""

from __future__ import annotations

import pytest
import torch
import torch.utils.cpp_extension

from decoders.moe import Int8RoutedExperts, RoutedExperts
from zoo.layers import matvec
from zoo.layers.int8 import int8_linear, quantize_per_channel
from zoo.layers.linear import threaded_linear

needs_kernels = pytest.mark.skipif(
    not matvec.cpu_supports_kernels() or matvec.kernels() is None,
    reason="the kernels need AVX-512 BF16 and a C++ compiler",
)


@pytest.fixture(autouse=True)
def inference():
    """The kernels serve inference: every test here runs with gradients off unless it says."""
    with torch.no_grad():
        yield


def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every product to torch's path for the rest of the test."""
    monkeypatch.setattr(matvec, "runs_here", lambda x: False)


def same_to_rounding(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal but for an occasional last-bit rounding flip of bfloat16 (float32 sums in
    another order): 98% of elements identical, none off by more than 2 ulps."""
    assert got.dtype == expected.dtype == torch.bfloat16 and got.shape == expected.shape
    identical = (got == expected).float().mean().item()
    assert identical >= 0.98, f"only {identical:.1%} of elements identical"
    ulp = expected.float().abs().clamp(min=1e-30) * 2**-7
    assert bool(((got.float() - expected.float()).abs() <= 2 * ulp + 1e-30).all())


@needs_kernels
@pytest.mark.parametrize("shape", [(96, 1280), (37, 50), (5, 16), (130, 895)])
def test_int8_matvec_is_the_product_rounded_once(shape, monkeypatch):
    """Every width (whole cache lines, a masked tail, fewer rows than a group of four) gives
    the exact product, scaled, rounded once to bfloat16 (to the float32 sum's order); where
    torch's ``_weight_int8pack_mm`` reads the width (multiples of 16), what it gives."""
    generator = torch.Generator().manual_seed(shape[1])
    q, scale = quantize_per_channel(torch.randn(shape, generator=generator), -1)
    x = torch.randn(1, shape[1], generator=generator).bfloat16()
    got = int8_linear(x, q, scale)
    exact = (x.double() @ q.double().T) * scale.double()
    same_to_rounding(got, exact.bfloat16())
    if shape[1] % 16 == 0:
        eager(monkeypatch)
        same_to_rounding(got, int8_linear(x, q, scale))


@needs_kernels
@pytest.mark.parametrize("shape", [(96, 1280), (37, 50), (3, 32)])
def test_bf16_matvec_equals_torch_mv(shape, monkeypatch):
    """A one-row bfloat16 product (with a bias) gives ``torch.mv``'s result, through the
    kernel: whole cache lines, a masked tail, fewer rows than a group of four."""
    generator = torch.Generator().manual_seed(shape[1])
    weight = torch.randn(shape, generator=generator).bfloat16()
    bias = torch.randn(shape[0], generator=generator).bfloat16()
    x = torch.randn(1, 1, shape[1], generator=generator).bfloat16()
    calls = []
    kernel = matvec.bf16_matvec
    monkeypatch.setattr(matvec, "bf16_matvec", lambda *a: calls.append(1) or kernel(*a))
    got = threaded_linear(x, weight, bias)
    assert calls == [1] and got.shape == (1, 1, shape[0])
    eager(monkeypatch)
    same_to_rounding(got, threaded_linear(x, weight, bias))


def expert_layer(int8: bool) -> tuple[RoutedExperts | Int8RoutedExperts, torch.Tensor]:
    """Experts of widths that end off whole cache lines (hidden 80, inner 48: masked bfloat16
    tails) but multiples of 16 (so the eager int8 layer runs torch's int8 kernel, one
    rounding like the fused one), and one token's hidden state."""
    generator = torch.Generator().manual_seed(int(int8))
    experts = RoutedExperts(12, 80, 48)
    for stack in (experts.w_gate_up, experts.w_down):
        stack.data.normal_(generator=generator)
    experts.to(torch.bfloat16).lay_out()
    layer = Int8RoutedExperts.from_float(experts) if int8 else experts
    return layer, torch.randn(1, 80, generator=generator).bfloat16()


@needs_kernels
@pytest.mark.parametrize("int8", [False, True], ids=["bf16", "int8"])
def test_fused_experts_equal_the_eager_layer(int8, monkeypatch):
    layer, hidden = expert_layer(int8)
    ids = torch.tensor([[7, 2, 11, 0]])  # unsorted, as the router's top-k
    weights = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    calls = []
    fused = matvec.moe_experts
    monkeypatch.setattr(matvec, "moe_experts", lambda *a: calls.append(1) or fused(*a))
    got = layer(hidden, ids, weights)
    assert calls == [1]  # one token went to the kernel
    eager(monkeypatch)
    same_to_rounding(got, layer(hidden, ids, weights))


@needs_kernels
def test_with_gradients_on_the_products_stay_with_torch():
    """Training a bfloat16 layer on one row keeps its gradients: the kernels are not used."""
    layer, hidden = expert_layer(int8=False)
    weight = torch.randn(8, 80).bfloat16().requires_grad_()
    with torch.enable_grad():
        assert not matvec.runs_here(hidden)
        threaded_linear(hidden, weight).sum().backward()
    assert weight.grad is not None


@needs_kernels
def test_stacks_the_kernel_cannot_read_take_the_eager_path():
    """float32 experts (training), and bfloat16 ones laid out input-major, are not handed to
    the kernel."""
    experts = RoutedExperts(4, 32, 16)
    assert experts.output_major_stacks() is None
    experts.to(torch.bfloat16)  # keeps float32's input-major layout until lay_out()
    assert experts.output_major_stacks() is None
    experts.lay_out()
    assert experts.output_major_stacks() is not None


@needs_kernels
def test_bad_operands_are_refused_by_name():
    layer, hidden = expert_layer(int8=False)
    gate_up, down, _ = layer.output_major_stacks()
    weights = torch.tensor([0.5, 0.5])
    with pytest.raises(RuntimeError, match="expert id 12 outside 0..11"):
        matvec.moe_experts(hidden, gate_up, down, torch.tensor([3, 12]), weights)
    with pytest.raises(RuntimeError, match="moe_experts x: expected a contiguous CPU BFloat16"):
        matvec.moe_experts(hidden.float(), gate_up, down, torch.tensor([3, 4]), weights)
    with pytest.raises(RuntimeError, match="not the stacks of one layer's experts"):
        wrong = gate_up[:, :80].contiguous()
        matvec.moe_experts(hidden, gate_up, wrong, torch.tensor([3, 4]), weights)
    q, scale = quantize_per_channel(torch.randn(8, 64), -1)
    with pytest.raises(RuntimeError, match="its scale must be a contiguous bfloat16 tensor"):
        matvec.int8_matvec(torch.randn(64).bfloat16(), q, scale[:4])


def test_switch_and_failed_build_fall_back_to_torch(monkeypatch):
    """``ZOO_CPU_KERNELS=0`` skips the kernels; a build that fails warns with the compiler's
    error line and leaves the products to torch."""
    build = matvec.kernels.__wrapped__
    monkeypatch.setenv(matvec.SWITCH, "0")
    assert build() is None
    monkeypatch.setenv(matvec.SWITCH, "1")
    monkeypatch.setattr(matvec, "cpu_supports_kernels", lambda: True)

    def failing_load(**kwargs):
        raise RuntimeError("Error building extension\nmatvec.cpp:1: error: no compiler here")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_load)
    with pytest.warns(UserWarning, match="did not build .*error: no compiler here"):
        assert build() is None
