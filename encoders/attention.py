"""Self-attention for LM-shaped encoders: grouped-query heads, rotary positions, explicit mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import apply_rotary


class GroupedQueryAttention(nn.Module):
    """Qwen2-style attention: ``num_kv_heads`` key/value heads shared by groups of query heads,
    biases on the q/k/v projections only (Qwen2's layout), rotate-half RoPE, and a mask the
    caller provides (an encoder's pattern is not causal), all through one SDPA call."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        qkv_bias: bool = True,
        out_bias: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads or num_heads % num_kv_heads:
            raise ValueError(
                f"need hidden_size ({hidden_size}) divisible by num_heads ({num_heads}) and "
                f"num_heads divisible by num_kv_heads ({num_kv_heads})"
            )
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = hidden_size // num_heads
        kv_width = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, kv_width, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, kv_width, bias=qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=out_bias)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``[B, T, C] -> [B, T, C]``; ``mask`` is additive or boolean, broadcastable to
        ``[B, heads, T, T]`` (``None``: every token sees every token)."""
        batch, length, _ = hidden.shape
        query = self.q_proj(hidden).view(batch, length, self.num_heads, -1).transpose(1, 2)
        key = self.k_proj(hidden).view(batch, length, self.num_kv_heads, -1).transpose(1, 2)
        value = self.v_proj(hidden).view(batch, length, self.num_kv_heads, -1).transpose(1, 2)
        query, key = apply_rotary(query, *rope), apply_rotary(key, *rope)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, enable_gqa=self.num_kv_heads != self.num_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
