"""The attention core of every zoo model: heads split and merged, grouped-query heads, one kernel
per backend (:data:`ATTENTION_BACKENDS`) and the projection module built on them.

A kernel takes ``query [B, H, T, D]``, ``key`` and ``value [B, H_kv, S, D]`` (``H`` a multiple
of ``H_kv``) and the mask ``masks.compile_mask`` made for its backend (``None``: every query
sees every key), and returns ``[B, H, T, D]``. The LM-shaped encoder picks its kernel by name;
the decoders, CLIP and SAM call SDPA (SAM through its relative-position specialisation,
:mod:`zoo.layers.relpos_attention`).
"""

from __future__ import annotations

import importlib.util
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from zoo.layers.linear import ThreadedLinear
from zoo.layers.rotary import Rope, apply_rotary

ATTENTION_BACKENDS = ("sdpa", "eager", "flex", "xformers")


def xformers_available() -> bool:
    """Whether the xformers backend can run here (it needs the package and a CUDA device)."""
    return importlib.util.find_spec("xformers") is not None and torch.cuda.is_available()


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, T, heads * D] -> [B, heads, T, D]``, a view."""
    batch, length, _ = x.shape
    return x.view(batch, length, heads, -1).transpose(1, 2)


def split_qkv(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, ...]:
    """Query, key and value ``[B, heads, T, D]`` of a fused ``[q; k; v]`` projection's output
    ``[B, T, 3 * heads * D]`` (CLIP's and SAM's layout), as views."""
    return split_heads(qkv, 3 * heads).chunk(3, dim=1)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, T, D] -> [B, T, H * D]``, the inverse of :func:`split_heads`."""
    batch, _, length, _ = x.shape
    return x.transpose(1, 2).reshape(batch, length, -1)


def repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Key or value heads ``[B, H_kv, S, D]`` repeated to ``heads``, each for its query group,
    for the kernels without native grouped-query support."""
    return x.repeat_interleave(heads // x.shape[1], 1)


def sdpa_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """PyTorch's fused scaled-dot-product attention with an additive or boolean mask.

    ``causal`` reads ``mask=None`` as causal over queries and keys of the same positions (SDPA's
    ``is_causal``, which needs no mask tensor); a single query then sees every key, as a
    decode step does."""
    return F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        is_causal=causal and mask is None and query.shape[-2] > 1,
        scale=scale,
        enable_gqa=key.shape[1] != query.shape[1],
    )


def eager_attention_with_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out (scores, mask, float32 softmax); also returns the probabilities
    ``[B, H, T, S]``, which the fused kernels never materialise. ``scale`` defaults to
    ``1 / sqrt(D)``, as SDPA's."""
    key, value = repeat_kv(key, query.shape[1]), repeat_kv(value, query.shape[1])
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    scores = query @ key.transpose(-1, -2) * scale
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
    key, value = repeat_kv(key, heads), repeat_kv(value, heads)
    bias = None if mask is None else mask.expand(batch, heads, length, key.shape[2])
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


class KeyValueCache(Protocol):
    """Where a generating decoder keeps past keys and values (``decoders.kv_cache.LayerCache``)."""

    def append(self, *new: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Store the new positions' tensors; return all positions'."""
        ...


class GroupedQueryAttention(nn.Module):
    """Self-attention whose ``num_heads`` query heads share ``num_kv_heads`` key/value heads in
    groups (equal counts: plain multi-head attention), with rotate-half rotary positions and a
    mask the caller makes for ``backend``'s kernel.

    Projections are named as in Qwen2 and DeepSeek (``q_proj``, ``k_proj``, ``v_proj``,
    ``o_proj``); ``qkv_bias`` gives Qwen2's biases on the q/k/v projections only. They are
    :class:`ThreadedLinear`, so a decode step's one-row products use every thread.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        out_bias: bool = False,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        if (head_dim is None and hidden_size % num_heads) or num_heads % num_kv_heads:
            raise ValueError(
                f"need hidden_size ({hidden_size}) divisible by num_heads ({num_heads}) and "
                f"num_heads divisible by num_kv_heads ({num_kv_heads})"
            )
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim or hidden_size // num_heads
        self.backend = check_attention_backend(backend)
        width, kv_width = num_heads * self.head_dim, num_kv_heads * self.head_dim
        self.q_proj = ThreadedLinear(hidden_size, width, bias=qkv_bias)
        self.k_proj = ThreadedLinear(hidden_size, kv_width, bias=qkv_bias)
        self.v_proj = ThreadedLinear(hidden_size, kv_width, bias=qkv_bias)
        self.o_proj = ThreadedLinear(width, hidden_size, bias=out_bias)

    def forward(
        self,
        hidden: torch.Tensor,
        rope: Rope,
        mask: torch.Tensor | BlockMask | None,
        cache: KeyValueCache | None = None,
        return_probs: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, C] -> [B, T, C]``; ``mask`` is what ``masks.compile_mask`` makes for this
        module's backend (``None``: every token sees every token). ``cache`` appends this
        forward's keys and values to the past ones, which the queries then read.
        ``return_probs`` runs the eager kernel (it needs the additive mask) and also returns
        ``[B, heads, T, S]``."""
        query, key, value = self.project(hidden)
        query, key = apply_rotary(query, *rope), apply_rotary(key, *rope)
        if cache is not None:
            key, value = cache.append(key, value)
        if return_probs:
            out, probs = eager_attention_with_probs(query, key, value, mask)
            return self.o_proj(merge_heads(out)), probs
        return self.o_proj(merge_heads(self.attend(query, key, value, mask)))

    def project(
        self, hidden: torch.Tensor, memory: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries of ``hidden`` and keys and values of ``memory`` (default: ``hidden``), split
        into heads: ``[B, H, T, D]`` and ``[B, H_kv, S, D]``."""
        memory = hidden if memory is None else memory
        return (
            split_heads(self.q_proj(hidden), self.num_heads),
            split_heads(self.k_proj(memory), self.num_kv_heads),
            split_heads(self.v_proj(memory), self.num_kv_heads),
        )

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | BlockMask | None,
    ) -> torch.Tensor:
        """The backend's kernel; a subclass whose masks mean something else overrides it."""
        return ATTENTION_KERNELS[self.backend](query, key, value, mask)
