"""The contract every vision encoder of the zoo fulfils.

Besides ``forward`` and ``num_tokens``, an encoder is a :class:`~zoo.model.component.Component`:
it declares its undecayed parameters, checkpoints its blocks, lists the public weights its parts
start from, rebuilds its derived buffers and names the roles stages freeze, with defaults that
fit an encoder without position tables, fixed buffers or named stages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from zoo.model.component import Component


class VisionEncoder(Component):
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

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The feature map ``[B, out_dim, h, w]`` an encoder that uses this one as its vision
        tokenizer reads (CLIP over SAM in ``deepencoder``). By default ``forward``'s row-major
        tokens of a square grid, folded back into the grid; an encoder whose map is not square
        or not its output overrides it."""
        tokens = self(pixel_values)
        batch, count, channels = tokens.shape
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(
                f"{type(self).__name__} gives {count} tokens, not a square grid, so its "
                "feature map is unknown; override forward_features"
            )
        return tokens.transpose(1, 2).reshape(batch, channels, side, side)


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
