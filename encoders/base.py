"""The contract every vision encoder of the zoo fulfils."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def create_tokenizer(spec: Mapping[str, Any]) -> VisionEncoder:
    """The first stage of a composite encoder: registered encoder ``spec["name"]`` with the rest.

    Composite encoders (``deepencoder``, ``causal_flow``) take their tokenizer as a config
    mapping, so any registered encoder can be swapped in from a config.
    """
    from zoo.registry import create_encoder

    spec = dict(spec)
    if "name" not in spec:
        raise ValueError(f"tokenizer must name a registered encoder under 'name', got {spec}")
    return create_encoder(**spec)
