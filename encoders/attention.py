"""Self-attention for LM-shaped encoders: grouped-query heads, rotary positions, explicit mask,
and a choice of attention kernel (``masks.ATTENTION_BACKENDS``).

Each kernel takes ``query [B, H, T, D]``, ``key`` and ``value [B, H_kv, T, D]`` and the mask
``masks.compile_mask`` made for that backend, and returns ``[B, H, T, D]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from masks.backends import ATTENTION_BACKENDS, xformers_available
from zoo.layers import apply_rotary


def sdpa_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """PyTorch's fused scaled-dot-product attention with an additive or boolean mask."""
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, enable_gqa=key.shape[1] != query.shape[1]
    )


def eager_attention_with_probs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out (scores, mask, float32 softmax); also returns the probabilities
    ``[B, H, T, T]``, which the fused kernels never materialise."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = query @ key.transpose(-1, -2) * query.shape[-1] ** -0.5
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    return probs @ value, probs


def eager_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """:func:`eager_attention_with_probs` without the probabilities."""
    return eager_attention_with_probs(query, key, value, mask)[0]


_compiled_flex_attention = None


def flex_kernel(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: BlockMask | None
) -> torch.Tensor:
    """flex_attention with a BlockMask: compiled (fused, block-sparse) on CUDA, unfused on the
    CPU where compiling costs more than a small run saves. torch has no flex_attention
    backward on the CPU, so there it serves inference only."""
    global _compiled_flex_attention
    if not query.is_cuda and torch.is_grad_enabled() and query.requires_grad:
        raise NotImplementedError(
            "attn_backend 'flex' runs forward-only on the CPU (torch's flex_attention has no CPU "
            "backward); train with 'sdpa' or 'eager' on the CPU, or use a CUDA device"
        )
    kernel = flex_attention
    if query.is_cuda:
        if _compiled_flex_attention is None:
            _compiled_flex_attention = torch.compile(flex_attention)
        kernel = _compiled_flex_attention
    return kernel(query, key, value, block_mask=mask, enable_gqa=key.shape[1] != query.shape[1])


def xformers_kernel(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """xformers' memory-efficient attention with an additive bias (``masks.xformers_bias``)."""
    import xformers.ops

    batch, heads, length, _ = query.shape
    groups = heads // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    bias = None if mask is None else mask.expand(batch, heads, length, length)
    out = xformers.ops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_bias=bias
    )
    return out.transpose(1, 2)


ATTENTION_KERNELS = {
    "sdpa": sdpa_attention,
    "eager": eager_attention,
    "flex": flex_kernel,
    "xformers": xformers_kernel,
}


def check_attention_backend(backend: str) -> str:
    """``backend`` if it is known and can run here, else an error naming the choices."""
    if backend not in ATTENTION_KERNELS:
        raise ValueError(f"unknown attn_backend {backend!r}; valid: {list(ATTENTION_BACKENDS)}")
    if backend == "xformers" and not xformers_available():
        raise ValueError(
            "attn_backend 'xformers' needs the xformers package and a CUDA device; use one of "
            "'sdpa', 'eager', 'flex' here"
        )
    return backend


class GroupedQueryAttention(nn.Module):
    """Qwen2-style attention: ``num_kv_heads`` key/value heads shared by groups of query heads,
    biases on the q/k/v projections only (Qwen2's layout), rotate-half RoPE, and a mask the
    caller provides (an encoder's pattern is not causal), run by the kernel of ``backend``."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        qkv_bias: bool = True,
        out_bias: bool = False,
        backend: str = "sdpa",
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
        self.backend = check_attention_backend(backend)
        kv_width = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, kv_width, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, kv_width, bias=qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=out_bias)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | BlockMask | None,
        return_probs: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, C] -> [B, T, C]``; ``mask`` is what ``masks.compile_mask`` makes for this
        module's backend (``None``: every token sees every token). ``return_probs`` runs the
        eager kernel (it needs the additive mask) and also returns ``[B, heads, T, T]``."""
        batch, length, _ = hidden.shape
        query = self.q_proj(hidden).view(batch, length, self.num_heads, -1).transpose(1, 2)
        key = self.k_proj(hidden).view(batch, length, self.num_kv_heads, -1).transpose(1, 2)
        value = self.v_proj(hidden).view(batch, length, self.num_kv_heads, -1).transpose(1, 2)
        query, key = apply_rotary(query, *rope), apply_rotary(key, *rope)
        if return_probs:
            out, probs = eager_attention_with_probs(query, key, value, mask)
            return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1)), probs
        out = ATTENTION_KERNELS[self.backend](query, key, value, mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))
