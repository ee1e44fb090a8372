"""A plain patch embedding with pixel-unshuffle compression: the tokenizer ablation of v2.

DeepSeek-OCR's tokenizer is SAM ViT-B (windowed and global attention over 16 px patches) and a
16x convolutional compressor. This ablation keeps only the geometry: one linear map per 16 px
patch, then every ``r x r`` block of patch vectors is stacked into one token (pixel unshuffle),
normalised and projected (as Swin's patch merging does), so a view gives exactly the tokens
SAM + compressor gives (1024 px -> 64 x 64 patches -> 16 x 16 tokens at ``r = 4``) with no
attention and no learned positions before the encoder's own stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import VisionEncoder
from zoo.registry import register_encoder


@register_encoder("patch_unshuffle")
class PatchUnshuffleTokenizer(VisionEncoder):
    """Plain conv patch embedding + pixel-unshuffle 16x token compression + linear (no attention).

    ``forward_features(pixels [B, 3, H, W]) -> [B, out_dim, ceil(H/p/r), ceil(W/p/r)]`` and
    ``forward`` the same cells as row-major tokens ``[B, h*w, out_dim]``; ``p`` is
    ``patch_size`` and ``r`` is ``downsample_ratio`` (tokens shrink ``r * r``-fold). A patch
    grid not divisible by ``r`` is zero-padded bottom/right, so the token grid matches SAM's
    stride-2 convolutions (``ceil``) for every view size.
    """

    def __init__(
        self,
        out_dim: int = 896,
        embed_dim: int = 768,
        patch_size: int = 16,
        downsample_ratio: int = 4,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if downsample_ratio < 1 or patch_size < 1:
            raise ValueError(
                f"patch_size and downsample_ratio must be >= 1, got {patch_size} and "
                f"{downsample_ratio}"
            )
        self.patch_size = patch_size
        self.downsample_ratio = downsample_ratio
        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        merged = embed_dim * downsample_ratio**2
        self.norm = nn.LayerNorm(merged, eps=norm_eps)
        self.proj = nn.Linear(merged, out_dim)
        self.out_dim = out_dim

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` pixels -> compressed feature map ``[B, out_dim, h, w]``."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be [B, 3, H, W], got shape {tuple(pixel_values.shape)}"
            )
        patches = self.patch_embed(pixel_values)
        ratio = self.downsample_ratio
        patches = F.pad(patches, (0, -patches.shape[-1] % ratio, 0, -patches.shape[-2] % ratio))
        merged = F.pixel_unshuffle(patches, ratio).permute(0, 2, 3, 1)
        return self.proj(self.norm(merged)).permute(0, 3, 1, 2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_features(pixel_values).flatten(2).transpose(1, 2)

    def num_tokens(self, view_size: int) -> int:
        side = -(-(view_size // self.patch_size) // self.downsample_ratio)
        return side * side
