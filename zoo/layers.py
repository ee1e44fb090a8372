"""Transformer building blocks shared by the LM-style encoder (v2) and the decoders."""

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


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, as Qwen2 and DeepSeek-V2 do."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` without biases (the MLP of Qwen2 and DeepSeek)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate_proj = ThreadedLinear(dim, hidden_dim, bias=False)
        self.up_proj = ThreadedLinear(dim, hidden_dim, bias=False)
        self.down_proj = ThreadedLinear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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

    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape ``[B, H, T, D]`` by per-position angles ``[B, T, D]``."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
