"""``zoo.layers.linear.threaded_linear``: the one-row product split over the threads (float32) or
through ``torch.mv`` (bfloat16)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from zoo.layers import ThreadedLinear, threaded_linear


class OpNames(TorchDispatchMode):
    """Records the name of every aten op run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@contextmanager
def threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def two_threads():
    with threads(2):
        yield


@pytest.mark.parametrize("layout", ["row-major", "column-major"])
@pytest.mark.parametrize("shape", [(24,), (1, 24), (1, 1, 24)])
def test_one_row_goes_through_bmm_and_equals_linear(two_threads, layout, shape):
    weight = torch.randn(10, 24)
    if layout == "column-major":
        weight = weight.t().contiguous().t()
    bias, x = torch.randn(10), torch.randn(shape)
    with OpNames() as ops:
        out = threaded_linear(x, weight, bias)
    assert "bmm.default" in ops.names
    torch.testing.assert_close(out, F.linear(x, weight, bias))


@pytest.mark.parametrize(
    "rows,out_features,thread_count,stride",
    [(2, 10, 2, 1), (1, 9, 2, 1), (1, 10, 1, 1), (1, 10, 2, 2)],
    ids=["rows", "odd", "one-thread", "strided"],
)
def test_other_products_go_to_linear(rows, out_features, thread_count, stride):
    weight, x = torch.randn(out_features, 24 * stride)[:, ::stride], torch.randn(rows, 24)
    with threads(thread_count), OpNames() as ops:
        out = threaded_linear(x, weight)
    assert "bmm.default" not in ops.names
    torch.testing.assert_close(out, F.linear(x, weight))


@pytest.mark.parametrize("shape", [(24,), (1, 24)])
def test_one_reduced_precision_row_goes_through_mv(shape):
    """torch's bfloat16 matrix-vector kernel: the fast one-row product in that precision."""
    weight, x = torch.randn(40, 24).bfloat16(), torch.randn(shape).bfloat16()
    with OpNames() as ops:
        out = threaded_linear(x, weight)
    assert "mv.default" in ops.names and "bmm.default" not in ops.names
    torch.testing.assert_close(
        out.float(), F.linear(x.float(), weight.float()), rtol=2e-2, atol=2e-2
    )


def test_threaded_linear_module_keeps_linear_parameters_and_gradients(two_threads):
    layer = ThreadedLinear(24, 10)
    plain = torch.nn.Linear(24, 10)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(1, 24, requires_grad=True)
    layer(x).square().sum().backward()
    grads = [x.grad.clone(), layer.weight.grad, layer.bias.grad]
    x.grad = None
    plain(x).square().sum().backward()
    for ours, expected in zip(grads, [x.grad, plain.weight.grad, plain.bias.grad], strict=True):
        torch.testing.assert_close(ours, expected)
