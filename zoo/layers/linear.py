"""The linear layer of the decoders: ``nn.Linear`` with a threaded one-row product on CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def threaded_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear``, except that one row on CPU is multiplied as a bmm over one block of
    ``weight``'s rows per thread.

    MKL multiplies a single row by a matrix on one thread, and one decoded token is nothing but
    such products; the batched form streams every block on its own thread
    (``python -m zoo.bench ablations`` times decode steps against ``F.linear``). Any other
    input, or a weight whose rows do not split evenly into views (neither row- nor
    column-major), goes to ``F.linear``.
    """
    out_features, in_features = weight.shape
    parts = torch.get_num_threads()
    splits = parts > 1 and out_features % parts == 0
    splits = splits and (weight.is_contiguous() or weight.t().is_contiguous())
    if x.device.type != "cpu" or x.numel() != in_features or not splits:
        return F.linear(x, weight, bias)
    blocks = weight.view(parts, out_features // parts, in_features)
    rows = x.reshape(1, 1, in_features).expand(parts, 1, in_features)
    out = torch.bmm(rows, blocks.transpose(1, 2)).reshape(*x.shape[:-1], out_features)
    return out if bias is None else out + bias


class ThreadedLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) through :func:`threaded_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return threaded_linear(x, self.weight, self.bias)
