"""The gated MLP of Qwen2 and DeepSeek."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.linear import ThreadedLinear


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` without biases (the MLP of Qwen2 and DeepSeek)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate_proj = ThreadedLinear(dim, hidden_dim, bias=False)
        self.up_proj = ThreadedLinear(dim, hidden_dim, bias=False)
        self.down_proj = ThreadedLinear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
