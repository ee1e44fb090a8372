"""CLIP-L/14 transformer run over a feature map: the second stage of DeepSeek-OCR's DeepEncoder.

The released model never patchifies pixels here: the SAM tokenizer's compressed map (one vector
per 16x16-downsampled cell, as wide as this transformer) is used as the patch embeddings. A class
token is prepended, learned positions (trained for a 16x16 grid) are resized to the map's grid,
and a pre-norm transformer with quick-GELU MLPs follows; there is no final norm.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.sam import resize_positions
from zoo.io.convert.pretrained_parts import clip_from_checkpoint
from zoo.layers.attention import merge_heads, sdpa_attention, split_qkv
from zoo.model.component import Component, WeightSource
from zoo.registry import register_encoder


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """The sigmoid approximation of GELU that OpenAI's CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


def resize_grid_positions(
    positions: torch.Tensor, native_grid: int, height: int, width: int
) -> torch.Tensor:
    """Resize a ``[1 + g*g, C]`` class+grid position table to ``[1 + height*width, C]``.

    The class position is kept as is; the grid part is resized as an image exactly like SAM's
    absolute positions (bicubic, antialiased, ``align_corners=False``, in float32), as the
    official DeepEncoder does. The native grid is returned unchanged.
    """
    if (height, width) == (native_grid, native_grid):
        return positions
    grid = positions[1:].reshape(1, native_grid, native_grid, positions.shape[-1])
    resized = resize_positions(grid, height, width).flatten(0, 2)
    return torch.cat([positions[:1], resized], dim=0)


class ClipAttention(nn.Module):
    """Multi-head self-attention with one fused ``[q; k; v]`` projection, through the core's
    SDPA kernel."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = split_qkv(self.qkv(x), self.num_heads)
        return self.out(merge_heads(sdpa_attention(query, key, value, None)))


class ClipMLP(nn.Module):
    """``fc2(quick_gelu(fc1(x)))`` with biases."""

    def __init__(self, width: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class ClipBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))`` then ``+ mlp(norm(.))``."""

    def __init__(self, width: int, num_heads: int, mlp_dim: int, norm_eps: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(width, eps=norm_eps)
        self.attn = ClipAttention(width, num_heads)
        self.mlp_norm = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = ClipMLP(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


@register_encoder("clip_l_over_sam")
class ClipOverFeatureMap(Component):
    """CLIP-L/14 transformer over a [B, C, h, w] feature map (DeepEncoder's 2nd stage, not pixels).

    ``forward(feature_map)`` returns ``[B, 1 + h*w, width]``: the class token first, then the
    grid cells in row-major order. ``native_grid`` is the grid the learned positions were
    trained for (224 / 14 = 16 in CLIP-L/14); other grids get resized positions.
    """

    def __init__(
        self,
        width: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_dim: int = 4096,
        native_grid: int = 16,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.width = width
        self.out_dim = width
        self.native_grid = native_grid
        # OpenAI CLIP's initialisation scale for both learned embeddings.
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.position_embedding = nn.Parameter(
            torch.randn(1 + native_grid * native_grid, width) * width**-0.5
        )
        # Spelled ``pre_layrnorm`` in the release; normalises embeddings before the first block.
        self.pre_norm = nn.LayerNorm(width, eps=norm_eps)
        self.blocks = nn.ModuleList(
            ClipBlock(width, num_heads, mlp_dim, norm_eps) for _ in range(depth)
        )

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        if feature_map.ndim != 4 or feature_map.shape[1] != self.width:
            raise ValueError(
                f"feature_map must be [B, {self.width}, h, w] (channels = CLIP width), "
                f"got shape {tuple(feature_map.shape)}"
            )
        batch, _, height, width = feature_map.shape
        patch_tokens = feature_map.flatten(2).transpose(1, 2)
        class_token = self.class_embedding.to(patch_tokens.dtype).expand(batch, 1, -1)
        tokens = torch.cat([class_token, patch_tokens], dim=1)
        tokens = tokens + resize_grid_positions(
            self.position_embedding, self.native_grid, height, width
        )
        tokens = self.pre_norm(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return tokens

    def no_weight_decay(self) -> set[str]:
        """The class token and the position table."""
        return super().no_weight_decay() | {"class_embedding", "position_embedding"}

    def weight_sources(self) -> dict[str, WeightSource]:
        """``clip``: a transformers or timm CLIP-L/14 vision folder (its pixel patchify unused)."""
        return {**super().weight_sources(), "clip": WeightSource(clip_from_checkpoint)}
