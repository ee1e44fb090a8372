"""The linear layer of the decoders: ``nn.Linear`` with a fast one-row product on CPU, and the
weight layout each precision's one-row product streams fastest."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import matvec

REDUCED_PRECISION = (torch.bfloat16, torch.float16)


def threaded_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear``, except for one row on CPU.

    In float32, MKL multiplies a single row by a matrix on one thread, and one decoded token is
    nothing but such products; the row goes as a bmm over one block of ``weight``'s rows per
    thread (``python -m zoo.bench ablations`` times decode steps against ``F.linear``). In
    bfloat16 or float16 with a row-major weight it goes to a matrix-vector kernel, which streams
    the weight two to three times faster than ``F.linear``'s oneDNN path for one row (see
    :func:`input_dim_contiguous`): the zoo's in bfloat16 where it runs (:mod:`zoo.layers.matvec`),
    else ``torch.mv``. Any other input, or a weight whose rows do not split evenly into views
    (neither row- nor column-major), goes to ``F.linear``.
    """
    out_features, in_features = weight.shape
    if x.device.type != "cpu" or x.numel() != in_features:
        return F.linear(x, weight, bias)
    if weight.dtype in REDUCED_PRECISION and x.dtype == weight.dtype and weight.is_contiguous():
        if weight.dtype == torch.bfloat16 and matvec.runs_here(x):
            out = matvec.bf16_matvec(x, weight)
        else:
            out = torch.mv(weight, x.reshape(in_features)).reshape(*x.shape[:-1], out_features)
        return out if bias is None else out + bias
    parts = torch.get_num_threads()
    splits = parts > 1 and out_features % parts == 0
    if not splits or not (weight.is_contiguous() or weight.t().is_contiguous()):
        return F.linear(x, weight, bias)
    blocks = weight.view(parts, out_features // parts, in_features)
    rows = x.reshape(1, 1, in_features).expand(parts, 1, in_features)
    out = torch.bmm(rows, blocks.transpose(1, 2)).reshape(*x.shape[:-1], out_features)
    return out if bias is None else out + bias


class ThreadedLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) through :func:`threaded_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return threaded_linear(x, self.weight, self.bias)


def input_dim_contiguous(dtype: torch.dtype) -> bool:
    """Whether a one-row product in ``dtype`` streams a wide weight fastest with its input
    dimension contiguous (each output's weights in one run: bfloat16 and float16, through
    ``torch.mv``) or its output dimension (float32, where the BLAS and ``torch._grouped_mm`` run
    the input-major layout 1.2-1.5x faster for one row). Layers whose weights dominate a decode
    step (the LM head, the routed experts) follow this rule; ``zoo.from_pretrained`` builds them
    so for the precision it loads in."""
    return dtype in REDUCED_PRECISION


def with_contiguous_dim(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """``tensor`` (same shape and values) stored with dimension ``dim`` (-1 or -2) the
    contiguous one and the others in order; itself when it already is."""
    if dim == -1:
        return tensor if tensor.is_contiguous() else tensor.contiguous()
    swapped = tensor.transpose(-1, -2)
    return tensor if swapped.is_contiguous() else swapped.contiguous().transpose(-1, -2)


class DtypeLaidOut:
    """A module whose weights' memory layout follows their precision
    (:func:`input_dim_contiguous`): ``lay_out()`` re-stores them (free on the meta device) and
    a load into the module lays them out again."""

    def lay_out(self) -> None:
        raise NotImplementedError


def lay_out_weights(module: nn.Module) -> None:
    """Lay out every :class:`DtypeLaidOut` part of ``module`` for its current precision (after
    ``module.to(dtype)``, which keeps the old layout)."""
    for part in module.modules():
        if isinstance(part, DtypeLaidOut):
            part.lay_out()
