"""Rotary position embeddings (rotate-half layout, as Qwen2 and DeepSeek-V2 apply them)."""

from __future__ import annotations

import torch
from torch import nn

# (cos, sin), each [B, T, head_dim]: what RotaryEmbedding returns and apply_rotary takes.
Rope = tuple[torch.Tensor, torch.Tensor]


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE: ``cos, sin = rope(position_ids, dtype)``, each ``[B, T, head_dim]``."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inverse_frequencies(), persistent=False)

    def _inverse_frequencies(self) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim
        return 1.0 / (self.theta**exponents)

    def reset_derived_buffers(self) -> None:
        """Recompute the (never stored) frequencies, e.g. after a build on the meta device."""
        self.inv_freq = self._inverse_frequencies()

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> Rope:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``[B, H, T, D]`` by per-position angles ``[B, T, D]``."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def pairs_to_halves(x: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V2 stores rotary dims as interleaved pairs; reorder them for rotate-half RoPE."""
    return x.unflatten(-1, (-1, 2)).transpose(-1, -2).flatten(-2)
