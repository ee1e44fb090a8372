"""Weight-only int8: symmetric per-output-channel int8 weights with bfloat16 scales, multiplied
by torch's own CPU kernel for them.

Why: a decode step on a CPU reads every active weight once per token and is bound by those
bytes; int8 halves bfloat16's. One row goes to the zoo's kernel where it runs
(:mod:`zoo.layers.matvec`, which reads the weights 1.2-1.4x faster). Otherwise torch ships the
kernel, ``torch._weight_int8pack_mm``
(bfloat16 rows times an ``[out, in]`` int8 matrix, scaled per output channel); torchao's
int8 weight-only linear calls that same kernel on CPU (or dequantizes before an ``mm``) and has
no form for stacked experts, so the zoo calls the kernel directly and needs no other package.
The kernel is written for decoding: fast for a few rows, slow for many (64 rows took 5x the
bfloat16 product's time here), so more than :data:`KERNEL_MAX_ROWS` rows (and any input width
the kernel cannot read) are multiplied by the weight converted to bfloat16 for the call, with
the scales applied to the output.

Quantisation: ``scale = max |w| / 127`` over each output channel (rounded to the scale's
dtype first), ``q = round(w / scale)``; the error of each weight is at most half a step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import matvec
from zoo.layers.linear import with_contiguous_dim

SCALE_SUFFIX = "_scale"
KERNEL_MAX_ROWS = 8
KERNEL_DEVICES = ("cpu", "mps")
# The CPU kernel reads the input dimension in blocks of 16 and returns wrong values otherwise.
KERNEL_IN_FEATURES_MULTIPLE = 16
QUANTIZE_BLOCK_ELEMENTS = 2**23  # a float32 working copy of 32 MiB


def quantize_per_channel(
    weight: torch.Tensor, input_dim: int, scale_dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)``: ``weight`` as int8 ``q`` of the same shape, stored with ``input_dim``
    (-1 or -2, not the first dimension) contiguous so that each output channel is one run, and
    ``scale`` (``weight``'s shape without ``input_dim``) with ``weight ~= q * scale`` along that
    dimension. Slices along the first dimension are quantized one block at a time, so the
    float32 working copy stays small whatever the weight's size."""
    if weight.dim() + input_dim < 1:
        raise ValueError(f"input_dim {input_dim} of a {weight.dim()}-d weight is its first")
    q = with_contiguous_dim(torch.empty(weight.shape, dtype=torch.int8), input_dim)
    scale = torch.empty(
        [n for i, n in enumerate(weight.shape) if i != weight.dim() + input_dim], dtype=scale_dtype
    )
    rows = max(1, QUANTIZE_BLOCK_ELEMENTS // max(1, weight[0].numel()))
    for start in range(0, weight.shape[0], rows):
        block = weight[start : start + rows].detach().to(torch.float32, copy=True)
        largest = torch.linalg.vector_norm(block, float("inf"), dim=input_dim, keepdim=True)
        block_scale = largest.div_(127).to(scale_dtype)
        block_scale.masked_fill_(block_scale == 0, 1)
        q[start : start + rows] = block.div_(block_scale.float()).round_().clamp_(-127, 127)
        scale[start : start + rows] = block_scale.squeeze(input_dim)
    return q, scale


def int8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x @ (weight * scale[:, None]).T`` for an int8 ``[out, in]`` ``weight``, computed in
    ``scale``'s dtype (see the module doc for the two paths) and returned in ``x``'s."""
    out_features, in_features = weight.shape
    rows = x.reshape(-1, in_features).to(scale.dtype)
    if scale.dtype == torch.bfloat16 and weight.is_contiguous() and matvec.runs_here(rows):
        return (
            matvec.int8_matvec(rows, weight, scale).to(x.dtype).reshape(*x.shape[:-1], out_features)
        )
    kernel = rows.shape[0] <= KERNEL_MAX_ROWS and x.device.type in KERNEL_DEVICES
    if kernel and in_features % KERNEL_IN_FEATURES_MULTIPLE == 0:
        out = torch._weight_int8pack_mm(rows.contiguous(), weight.contiguous(), scale)
    else:
        out = F.linear(rows, weight.to(scale.dtype)) * scale
    return out.to(x.dtype).reshape(*x.shape[:-1], out_features)


class Int8Weights:
    """A module holding int8 weights as buffers, each with a ``<name>_scale`` buffer;
    ``input_dims`` names each weight's input dimension (the one its scales do not span)."""

    input_dims: dict[str, int]

    def register_int8_weights(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        scale_dtype: torch.dtype,
        device: torch.device | str | None,
    ) -> None:
        """Empty int8 weights of ``shapes`` and their scales (filled by a load or
        :meth:`quantize_from`)."""
        for name, shape in shapes.items():
            empty = torch.empty(shape, dtype=torch.int8, device=device)
            self.register_buffer(name, with_contiguous_dim(empty, self.input_dims[name]))
            input_dim = len(shape) + self.input_dims[name]
            scale_shape = [n for i, n in enumerate(shape) if i != input_dim]
            self.register_buffer(
                name + SCALE_SUFFIX, torch.empty(scale_shape, dtype=scale_dtype, device=device)
            )

    def quantized_entries(self, name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """The buffers (``name`` and its scale) that stand for the float ``weight``."""
        scale_dtype = getattr(self, name + SCALE_SUFFIX).dtype
        q, scale = quantize_per_channel(weight, self.input_dims[name], scale_dtype)
        return {name: q, name + SCALE_SUFFIX: scale}

    def quantize_from(self, source: nn.Module) -> None:
        """Fill the int8 weights from ``source``'s float tensors of the same names (nothing to
        do on the meta device)."""
        for name in self.input_dims:
            weight = getattr(source, name)
            if not weight.is_meta:
                for entry, tensor in self.quantized_entries(name, weight).items():
                    setattr(self, entry, tensor)


class Int8Linear(nn.Module, Int8Weights):
    """A bias-free linear layer with an int8 ``weight`` ``[out, in]`` and its ``weight_scale``
    ``[out]`` (buffers), through :func:`int8_linear`."""

    input_dims = {"weight": -1}

    def __init__(
        self,
        in_features: int,
        out_features: int,
        scale_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_int8_weights({"weight": (out_features, in_features)}, scale_dtype, device)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """``linear`` quantized (on the meta device: an empty layer of the same sizes)."""
        if linear.bias is not None:
            raise ValueError("Int8Linear quantizes bias-free linear layers; this one has a bias")
        quantized = cls(linear.in_features, linear.out_features, device=linear.weight.device)
        quantized.quantize_from(linear)
        return quantized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.weight, self.weight_scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"
