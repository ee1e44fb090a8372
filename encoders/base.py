"""The contract every vision encoder of the zoo fulfils."""

from __future__ import annotations

import torch
from torch import nn


class VisionEncoder(nn.Module):
    """Maps a batch of square views to one token sequence per view.

    ``forward(pixel_values)`` takes ``[B, 3, S, S]`` normalised pixels and returns
    ``[B, N, out_dim]``. For grid-shaped outputs (v1) the tokens are in row-major order and
    ``N`` is a square, so the image-token layout can insert newline tokens after each row.
    """

    out_dim: int

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_tokens(self, view_size: int) -> int:
        """Number of tokens ``forward`` returns for one ``view_size`` x ``view_size`` view."""
        raise NotImplementedError
