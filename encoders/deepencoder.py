"""DeepEncoder, the vision encoder of DeepSeek-OCR (v1): SAM tokenizer, then CLIP-L over its map.

Each output token of a view is one cell of the tokenizer's compressed grid, described twice:
by CLIP-L, which reads the whole grid with global attention, and by the tokenizer itself. The
release concatenates the two along channels, CLIP first, so the token width is the sum of
both widths (1024 + 1024 = 2048).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from encoders.base import VisionEncoder, create_tokenizer
from encoders.clip import ClipOverFeatureMap
from zoo.registry import register_encoder

DEFAULT_TOKENIZER: dict[str, Any] = {"name": "sam_vitb", "downsample_channels": (512, 1024)}


@register_encoder("deepencoder")
class DeepEncoder(VisionEncoder):
    """DeepSeek-OCR v1 DeepEncoder: SAM-B + 16x conv compressor, CLIP-L over it, 2048-d tokens.

    ``tokenizer`` names a registered encoder, whose ``forward_features`` map ``[B, C, h, w]``
    CLIP reads (default: the v1 SAM ViT-B with a 1024-channel compressor), and its keyword
    arguments;
    ``clip`` holds the keyword arguments of :class:`ClipOverFeatureMap`, whose width must equal
    the tokenizer's output channels.
    """

    def __init__(
        self,
        tokenizer: Mapping[str, Any] | None = None,
        clip: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        tokenizer_spec = dict(DEFAULT_TOKENIZER if tokenizer is None else tokenizer)
        self.tokenizer = create_tokenizer(tokenizer_spec)
        self.clip = ClipOverFeatureMap(**dict(clip or {}))
        if self.tokenizer.out_dim != self.clip.width:
            raise ValueError(
                f"tokenizer {tokenizer_spec['name']!r} outputs {self.tokenizer.out_dim} channels "
                f"but the CLIP stage is {self.clip.width} wide; they must be equal because the "
                "tokenizer's map is CLIP's patch embedding"
            )
        self.out_dim = self.clip.out_dim + self.tokenizer.out_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        feature_map = self.tokenizer.forward_features(pixel_values)
        clip_tokens = self.clip(feature_map)[:, 1:]  # the class token does not go on
        tokenizer_tokens = feature_map.flatten(2).transpose(1, 2)
        return torch.cat([clip_tokens, tokenizer_tokens], dim=-1)

    def num_tokens(self, view_size: int) -> int:
        return self.tokenizer.num_tokens(view_size)

    def roles(self) -> dict[str, str]:
        """``vision_tokenizer`` (SAM + compressor, frozen in v1 stage 2) and ``clip``."""
        return {**super().roles(), "vision_tokenizer": "tokenizer", "clip": "clip"}
