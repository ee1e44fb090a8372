"""SAM ViT-B image encoder with DeepSeek-OCR's 16x convolutional compressor: the shared tokenizer.

Pixels are cut into 16x16 patches, given absolute positions (learned for a 64x64 grid, resized
for other grids) and run through ViTDet-style blocks: most attend inside 14x14 windows, a few
attend globally, all add decomposed relative positions to their attention scores. The neck
(1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) and two bias-free 3x3 stride-2 convolutions
then reduce each side 4x, so a 1024 view gives a 16x16 map (256 tokens).

Module names follow the official checkpoints (``blocks.N.attn.qkv``, ``neck.0..3``, ``net_2``,
``net_3``, ...), so official weights load under a prefix change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import VisionEncoder
from zoo.io.convert.pretrained_parts import SAM_PARTS_NOT_IN_SAM, sam_from_checkpoint
from zoo.layers.attention import merge_heads, split_qkv
from zoo.layers.relpos_attention import relpos_attention
from zoo.model.component import WeightSource
from zoo.registry import register_encoder


def resize_positions(pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a ``[1, g, g, C]`` absolute position grid to ``[1, height, width, C]``.

    Bicubic with antialiasing and ``align_corners=False``, computed in float32, as in the
    official DeepEncoders; the native grid is returned unchanged.
    """
    if pos_embed.shape[1:3] == (height, width):
        return pos_embed
    grid = pos_embed.permute(0, 3, 1, 2).float()
    resized = F.interpolate(
        grid, size=(height, width), mode="bicubic", antialias=True, align_corners=False
    )
    return resized.to(pos_embed.dtype).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: ``[B, 3, H, W] -> [B, H/p, W/p, C]`` (channels last).

    The projection is a stride-``p`` convolution (``proj``, as checkpoints store it), computed
    as a linear layer over the flattened patches: the same sums, channels-last directly, and
    lean on CPU, where the bfloat16 convolution allocated 1.5 GiB for one 1024 view here (the
    patches take 14 MiB) and ran 2-4x slower in both precisions.
    """

    def __init__(self, patch_size: int, width: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        size = self.proj.kernel_size[0]
        batch, channels = pixel_values.shape[:2]
        rows, cols = pixel_values.shape[2] // size, pixel_values.shape[3] // size
        # a remainder of fewer than `size` pixels is dropped, as the strided convolution drops it
        pixels = pixel_values[..., : rows * size, : cols * size]
        patches = pixels.reshape(batch, channels, rows, size, cols, size)
        patches = patches.permute(0, 2, 4, 1, 3, 5).flatten(3)
        return F.linear(patches, self.proj.weight.flatten(1), self.proj.bias)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)


class SamAttention(nn.Module):
    """Multi-head attention over a grid with decomposed relative positions.

    ``rel_pos_h``/``rel_pos_w`` are learned for ``grid_size`` x ``grid_size``; the score of query
    ``(qh, qw)`` for key ``(kh, kw)`` gets ``q . Rh[qh - kh] + q . Rw[qw - kw]`` added (``q``
    unscaled), by the attention core's relative-position specialisation
    (``zoo/layers/relpos_attention.py``: SDPA given the bias on CUDA, a memory-lean kernel on CPU).
    """

    def __init__(self, width: int, num_heads: int, grid_size: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        head_dim = width // num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        # SAM zero-initialises its relative positions.
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid_size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, h, w, C] -> [N, h, w, C]`` over ``N`` independent grids (views or windows)."""
        query, key, value = split_qkv(self.qkv(x).flatten(1, 2), self.num_heads)
        out = relpos_attention(query, key, value, self.rel_pos_h, self.rel_pos_w, x.shape[1:3])
        return self.proj(merge_heads(out).view(x.shape))


class SamMLP(nn.Module):
    """``lin2(gelu(lin1(x)))`` with exact GELU."""

    def __init__(self, width: int, hidden_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(width, hidden_dim)
        self.lin2 = nn.Linear(hidden_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


def partition_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``[B, H, W, C] -> [B * nH * nW, window, window, C]``, zero-padding bottom/right first.

    The padding tokens are attended to like any other (as in SAM), so padding happens after the
    block's first norm.
    """
    batch, height, width, channels = x.shape
    x = F.pad(x, (0, 0, 0, -width % window, 0, -height % window))
    rows, cols = x.shape[1] // window, x.shape[2] // window
    x = x.view(batch, rows, window, cols, window, channels).transpose(2, 3)
    return x.reshape(batch * rows * cols, window, window, channels)


def merge_windows(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`partition_windows`: ``[B * nH * nW, w, w, C] -> [B, height, width, C]``."""
    window, channels = windows.shape[1], windows.shape[-1]
    rows, cols = -(-height // window), -(-width // window)
    x = windows.view(-1, rows, cols, window, window, channels).transpose(2, 3)
    return x.reshape(-1, rows * window, cols * window, channels)[:, :height, :width]


class SamBlock(nn.Module):
    """Pre-norm ViT block; ``window_size > 0`` attends within windows, 0 attends globally."""

    def __init__(
        self, width: int, num_heads: int, mlp_dim: int, window_size: int, grid_size: int
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SamAttention(width, num_heads, window_size or grid_size)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = SamMLP(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        if self.window_size:
            height, width = x.shape[1:3]
            windows = partition_windows(normed, self.window_size)
            attended = merge_windows(self.attn(windows), height, width)
        else:
            attended = self.attn(normed)
        x = x + attended
        return x + self.mlp(self.norm2(x))


@register_encoder("sam_vitb")
class SamViTB(VisionEncoder):
    """SAM ViT-B/16 + neck + 16x conv compressor (DeepSeek-OCR tokenizer): 1024 px -> 16x16 tokens.

    ``forward_features(pixels)`` returns the compressed map ``[B, C, h, w]`` and ``forward``
    the same cells as row-major tokens ``[B, h*w, C]``; ``C = downsample_channels[-1]`` (1024
    in DeepSeek-OCR, 896 in DeepSeek-OCR 2). ``img_size`` is the view size the absolute
    positions and the global blocks' relative positions are learned for; other sizes resize them.
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        width: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        neck_dim: int = 256,
        downsample_channels: Sequence[int] = (512, 1024),
    ) -> None:
        super().__init__()
        if len(downsample_channels) != 2:
            raise ValueError(
                f"downsample_channels must give the two compressor convs' output channels, "
                f"got {list(downsample_channels)}"
            )
        bad_indexes = [i for i in global_attn_indexes if not 0 <= i < depth]
        if bad_indexes:
            raise ValueError(f"global_attn_indexes {bad_indexes} are outside 0..{depth - 1}")
        self.patch_size = patch_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, width)
        # SAM zero-initialises its absolute positions.
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, width))
        self.blocks = nn.ModuleList(
            SamBlock(
                width,
                num_heads,
                int(width * mlp_ratio),
                0 if i in global_attn_indexes else window_size,
                grid,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(width, neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(neck_dim),
            nn.Conv2d(neck_dim, neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck_dim),
        )
        mid_channels, out_channels = downsample_channels
        self.net_2 = nn.Conv2d(
            neck_dim, mid_channels, kernel_size=3, stride=2, padding=1, bias=False
        )
        self.net_3 = nn.Conv2d(
            mid_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False
        )
        self.out_dim = out_channels

    def neck_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` pixels -> SAM's own output, the neck map ``[B, neck_dim, H/16, W/16]``
        (what a SAM checkpoint alone computes, before DeepSeek-OCR's compressor)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must be [B, 3, H, W], got shape {tuple(pixel_values.shape)}"
            )
        x = self.patch_embed(pixel_values)
        x = x + resize_positions(self.pos_embed, x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` pixels -> compressed feature map ``[B, out_dim, H/64, W/64]``."""
        return self.net_3(self.net_2(self.neck_features(pixel_values)))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.forward_features(pixel_values).flatten(2).transpose(1, 2)

    def num_tokens(self, view_size: int) -> int:
        side = view_size // self.patch_size
        for _ in range(2):  # each compressor conv: kernel 3, stride 2, padding 1
            side = (side - 1) // 2 + 1
        return side * side

    def no_weight_decay(self) -> set[str]:
        """The absolute position grid and every block's relative position tables."""
        relative = {
            n for n, _ in self.named_parameters() if n.endswith((".rel_pos_h", ".rel_pos_w"))
        }
        return super().no_weight_decay() | {"pos_embed"} | relative

    def weight_sources(self) -> dict[str, WeightSource]:
        """``sam``: a transformers or timm SAM ViT-B folder (no SAM has the compressor convs)."""
        sam = WeightSource(sam_from_checkpoint, never_in_source=SAM_PARTS_NOT_IN_SAM)
        return {**super().weight_sources(), "sam": sam}
